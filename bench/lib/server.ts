/**
 * The benchmark's PostgreSQL: DATABASE_URL when it is set, otherwise a private embedded server (the
 * tests' own `startPrivateServer`). Its admin session is pg-warden's `Observer` (the one the tests
 * and the command line use), which also creates the table, checks what the contenders return, and
 * reads the server's view (`pg_stat_activity`) after each run.
 */
import { Observer } from "../../src/core/observer.js"
import { startPrivateServer } from "../../test/support/embedded.js"

export const ADMIN_APPLICATION_NAME = "pg-warden-bench-admin"
export const ROWS = 1000

export interface BenchServer {
  readonly url: string
  readonly kind: "external" | "embedded"
  readonly dispose: () => Promise<void>
}

export const startServer = async (): Promise<BenchServer> => {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") return { url: external, kind: "external", dispose: async () => {} }
  const server = await startPrivateServer()
  return { url: server.url, kind: "embedded", dispose: () => server.dispose() }
}

export const redact = (url: string): string => url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@")

export interface ServerView {
  readonly total: number
  readonly byState: Readonly<Record<string, number>>
}

export class Admin extends Observer {
  static open(url: string): Promise<Admin> {
    return Admin.connect(url, { applicationName: ADMIN_APPLICATION_NAME })
  }

  async serverInfo(): Promise<{ version: string; maxConnections: number }> {
    const [row] = await this.query<{ v: string; m: string }>(
      "SELECT current_setting('server_version') AS v, current_setting('max_connections') AS m"
    )
    return { version: String(row?.v), maxConnections: Number(row?.m) }
  }

  /** `bench_accounts(id, name, balance)`: ids 1..ROWS, dropped and created anew. */
  async createSchema(): Promise<void> {
    await this.query("DROP TABLE IF EXISTS bench_accounts")
    await this.query(
      "CREATE TABLE bench_accounts (id integer PRIMARY KEY, name text NOT NULL, balance integer NOT NULL)"
    )
    await this.query(
      "INSERT INTO bench_accounts SELECT i, 'account-' || i, i * 10 FROM generate_series(1, $1::int) AS i",
      [ROWS]
    )
    await this.query("ANALYZE bench_accounts")
  }

  async row(id: number): Promise<Record<string, unknown> | undefined> {
    return (
      await this.query<Record<string, unknown>>("SELECT id, name, balance FROM bench_accounts WHERE id = $1", [id])
    )[0]
  }

  async balance(id: number): Promise<number> {
    return Number(
      (await this.query<{ balance: number }>("SELECT balance FROM bench_accounts WHERE id = $1", [id]))[0]?.balance
    )
  }

  /**
   * Transactions the server has counted in this database (commits + rollbacks). A statement outside a
   * transaction block is a transaction of its own, so the difference over a run is a server-side count
   * of the work a contender really did. Backends report their counts at the end of a transaction,
   * at most once a second, and when they exit: read it after the pool is closed.
   */
  async transactions(): Promise<number> {
    await this.query("SELECT pg_stat_clear_snapshot()")
    const [row] = await this.query<{ n: number }>(
      "SELECT (xact_commit + xact_rollback)::float8 AS n FROM pg_stat_database WHERE datname = current_database()"
    )
    return Number(row?.n)
  }

  /**
   * Backends by state for one application_name (our own session excluded). With `busyOnly`, idle backends are left
   * out: through PgBouncer, the idle server connections it keeps pooled are PgBouncer's, not the contender's.
   */
  async view(applicationName: string, busyOnly = false): Promise<ServerView> {
    const byState: Record<string, number> = {}
    const backends = (await this.backends(applicationName)).filter((b) => !busyOnly || b.state !== "idle")
    for (const b of backends) {
      const state = b.state ?? "unknown"
      byState[state] = (byState[state] ?? 0) + 1
    }
    return { total: backends.length, byState }
  }

  /** Polls until no backend (with `busyOnly`, no busy one) of `applicationName` is left, up to `ms`; returns the last view. */
  async waitGone(applicationName: string, ms: number, busyOnly = false): Promise<ServerView> {
    await this.waitForBackends(applicationName, (backends) => backends.every((b) => busyOnly && b.state === "idle"), ms)
    return this.view(applicationName, busyOnly)
  }

  /** Ends every backend of `applicationName` (leftovers of a run), so the next run starts clean. */
  async terminateLeftovers(applicationName: string): Promise<number> {
    const signalled = await this.terminateAll(applicationName)
    await this.waitGone(applicationName, 2_000)
    return signalled
  }
}
