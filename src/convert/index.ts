/** Image conversion to eStargz, and the publishers converted images go to. */
export * from './errors.js'
export { convertImage, layoutIndexJson, DEFAULTS, type ConvertOptions, type ConvertProgress, type ConvertedImage, type ConversionResult } from './image.js'
export { convertLayer, type ConvertedLayer, type LayerOptions } from './layer.js'
export { IpfsPublisher } from './ipfs-publisher.js'
export { LayoutPublisher } from './layout-publisher.js'
export { openSourceLayer } from './source-layer.js'
export { fanOutSegments, type BlobPublisher, type PublishedBlob, type SegmentProducer, type FinishedImage } from './publisher.js'
