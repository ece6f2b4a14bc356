/** The distribution-spec grammar of repository names and tags. */
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/

/** The `ipfs/<cid>` names: a CID is its own repository. */
export const IPFS_NAME_PREFIX = 'ipfs/'

export function isValidName (name: string): boolean {
  return name.length <= 255 && NAME.test(name)
}

export function isValidTag (tag: string): boolean {
  return TAG.test(tag)
}
