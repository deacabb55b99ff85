/**
 * Runs a command with `DATABASE_URL` pointing at a real PostgreSQL: the one in `DATABASE_URL`
 * when it is set, otherwise a fresh embedded server that is stopped and removed afterwards.
 *
 *   tsx test/support/with-server.ts <command> [args...]
 */
import { spawn } from "node:child_process"
import { startPrivateServer } from "./embedded.js"

const [command, ...args] = process.argv.slice(2)
if (command === undefined) {
  console.error("usage: with-server <command> [args...]")
  process.exit(2)
}

const server = process.env.DATABASE_URL ? undefined : await startPrivateServer()
const url = process.env.DATABASE_URL ?? server!.url
const child = spawn(command, args, { stdio: "inherit", env: { ...process.env, DATABASE_URL: url } })
const forward = (signal: NodeJS.Signals) => child.kill(signal)
process.on("SIGINT", forward)
process.on("SIGTERM", forward)
const code = await new Promise<number>((resolve) =>
  child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)))
)
await server?.dispose()
process.exit(code)
