import { Command } from 'commander'
import { generateSwarmKey } from '../../ipfs/swarm-key.js'
import { writeStdout } from '../output.js'

/** `swarm key generate`: a new private-swarm key on stdout (`> swarm.key`, then chmod 600). */
export function swarmCommand (): Command {
  const swarm = new Command('swarm').description('private swarm: nodes that share a key connect only to each other')
  const key = new Command('key').description('the private swarm\'s pre-shared key (swarm.key v1)')
  key.addCommand(new Command('generate')
    .description('print a new random swarm key (swarm.key v1, the format of go-ipfs and Kubo); keep it private: the daemon refuses a key file others may read (chmod 600)')
    .action(async () => {
      await writeStdout(generateSwarmKey())
    }))
  swarm.addCommand(key)
  return swarm
}
