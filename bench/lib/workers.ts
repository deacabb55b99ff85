/**
 * The parent side of the worker protocol (lib/worker-core.mjs): spawns a contender's process,
 * sends one command at a time with a deadline, and respawns the process when a command hangs.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import * as path from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"

export const benchDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const rootDir = path.resolve(benchDir, "..")

export interface WorkerSpec {
  /** Short key: also the application_name suffix. */
  readonly key: string
  readonly label: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** Connects through the run's PgBouncer (transaction mode) instead of to the server itself. */
  readonly throughBouncer?: boolean
}

const tsxLoader = path.join(rootDir, "node_modules", "tsx", "dist", "loader.mjs")

export const tsWorker = (
  key: string,
  label: string,
  options: { readonly throughBouncer?: boolean } = {}
): WorkerSpec => ({
  key,
  label,
  command: process.execPath,
  args: ["--expose-gc", "--import", tsxLoader, path.join(benchDir, "worker.ts"), key],
  ...options
})

/** pg-warden's worker from another checkout of this repository (`--baseline DIR`). */
export const checkoutWorker = (key: string, dir: string): WorkerSpec => {
  const root = path.resolve(dir)
  const commit = spawnSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).stdout.trim()
  return {
    key,
    label: `pg-warden ${commit || path.basename(root)}`,
    command: process.execPath,
    args: [
      "--expose-gc",
      "--import",
      path.join(root, "node_modules", "tsx", "dist", "loader.mjs"),
      path.join(root, "bench", "worker.ts"),
      "warden"
    ]
  }
}

/** effect4/: pg-warden's Effect 4 edition, whose node_modules hold the Effect 4 tree and a Node 22 binary. */
export const effect4Dir = path.join(rootDir, "effect4")
const effect4Node = path.join(effect4Dir, "node_modules", ".bin", "node")

/**
 * What the Effect 4 workers need and is missing (empty when nothing is): effect4/node_modules, which the
 * root's `npm ci` installs through its prepare script.
 */
export const effect4Missing = (): ReadonlyArray<string> =>
  [
    effect4Node,
    path.join(effect4Dir, "node_modules", "effect", "package.json"),
    path.join(effect4Dir, "node_modules", "@effect", "sql-pg", "package.json")
  ]
    .filter((file) => !existsSync(file))
    .map((file) => path.relative(rootDir, file))

/**
 * An Effect 4 contender (`effect4`: @effect/sql-pg 4; `warden4`: pg-warden's Effect 4 edition):
 * `bench/effect4/worker.mjs` on effect4/'s Node 22 (Effect 4 wants Node >= 22.19) and effect4/'s
 * dependency tree. Both load the root's tsx (warden4 imports effect4/src/*.ts), so the two differ
 * only in the client.
 */
export const effect4Worker = (key: "effect4" | "warden4", label: string): WorkerSpec => ({
  key,
  label,
  command: effect4Node,
  args: ["--expose-gc", "--import", tsxLoader, path.join(benchDir, "effect4", "worker.mjs"), key]
})

export class CommandTimeout extends Error {}

export class Worker {
  private child: ChildProcess | undefined
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private stderrTail: Array<string> = []

  constructor(readonly spec: WorkerSpec) {}

  private start(): ChildProcess {
    const child = spawn(this.spec.command, [...this.spec.args], {
      cwd: rootDir,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, NODE_ENV: "production" }
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let message: { id: number; ok: boolean; result?: unknown; error?: string }
      try {
        message = JSON.parse(line)
      } catch {
        return
      }
      const waiter = this.pending.get(message.id)
      if (waiter === undefined) return
      this.pending.delete(message.id)
      if (message.ok) waiter.resolve(message.result)
      else waiter.reject(new Error(`${this.spec.label}: ${message.error}`))
    })
    createInterface({ input: child.stderr! }).on("line", (line) => {
      this.stderrTail.push(line)
      if (this.stderrTail.length > 30) this.stderrTail.shift()
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${this.spec.key}] ${line}\n`)
    })
    child.on("exit", (code, signal) => {
      if (this.child === child) this.child = undefined
      for (const [, waiter] of this.pending) {
        waiter.reject(new Error(`${this.spec.label}: worker exited (${code ?? signal})\n${this.stderrTail.join("\n")}`))
      }
      this.pending.clear()
    })
    this.child = child
    return child
  }

  /** Sends a command and waits for its answer, at most `timeoutMs` (then the worker is killed). */
  send<A = unknown>(cmd: string, args: unknown, timeoutMs: number): Promise<A> {
    const child = this.child ?? this.start()
    const id = this.nextId++
    return new Promise<A>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new CommandTimeout(`${this.spec.label}: ${cmd} did not answer within ${timeoutMs} ms`))
        this.kill()
      }, timeoutMs)
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer)
          resolve(v as A)
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        }
      })
      child.stdin!.write(`${JSON.stringify({ id, cmd, args })}\n`)
    })
  }

  /** Kills the process (only this worker's own child); the next command starts a new one. */
  kill(): void {
    const child = this.child
    this.child = undefined
    if (child !== undefined && child.exitCode === null) child.kill("SIGKILL")
  }

  async stop(): Promise<void> {
    const child = this.child
    if (child === undefined) return
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    await this.send("exit", {}, 5_000).catch(() => undefined)
    const timer = setTimeout(() => this.kill(), 5_000)
    await exited
    clearTimeout(timer)
  }
}
