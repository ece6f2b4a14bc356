/** An image stored in IPFS (an OCI layout directory, or a descriptor JSON), read as an image source. */
export * from './errors.js'
export { IpfsImageSource, parseIpfsRef, cidOfDescriptor } from './ipfs-image.js'
