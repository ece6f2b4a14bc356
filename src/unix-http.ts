import { request } from 'node:http'

/**
 * Does an HTTP server on this unix socket answer `GET path` with 200 within `timeoutMs`? For the
 * health routes the daemon and the FUSE manager probe each other with; any failure is "no".
 */
export async function answersOnSocket (socketPath: string, path: string, timeoutMs = 2_000): Promise<boolean> {
  return await new Promise(resolve => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on('error', () => resolve(false))
    req.on('timeout', () => { req.destroy(); resolve(false) })
    req.end()
  })
}
