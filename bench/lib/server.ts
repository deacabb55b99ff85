/**
 * The benchmark's PostgreSQL: DATABASE_URL when it is set, otherwise a private embedded server (the
 * tests' own `startPrivateServer`). An admin connection of its own creates the table, checks what
 * the contenders return, and reads the server's view (`pg_stat_activity`) after each run.
 */
import pg from "pg"
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

export class Admin {
  private constructor(private readonly client: pg.Client) {}

  static async connect(url: string): Promise<Admin> {
    const client = new pg.Client({ connectionString: url, application_name: ADMIN_APPLICATION_NAME })
    client.on("error", (error) => console.error("[bench admin]", error.message))
    await client.connect()
    return new Admin(client)
  }

  async serverInfo(): Promise<{ version: string; maxConnections: number }> {
    const v = await this.client.query(
      "SELECT current_setting('server_version') AS v, current_setting('max_connections') AS m"
    )
    return { version: String(v.rows[0].v), maxConnections: Number(v.rows[0].m) }
  }

  /** `bench_accounts(id, name, balance)`: ids 1..ROWS, dropped and created anew. */
  async createSchema(): Promise<void> {
    await this.client.query("DROP TABLE IF EXISTS bench_accounts")
    await this.client.query(
      "CREATE TABLE bench_accounts (id integer PRIMARY KEY, name text NOT NULL, balance integer NOT NULL)"
    )
    await this.client.query(
      "INSERT INTO bench_accounts SELECT i, 'account-' || i, i * 10 FROM generate_series(1, $1::int) AS i",
      [ROWS]
    )
    await this.client.query("ANALYZE bench_accounts")
  }

  async row(id: number): Promise<Record<string, unknown> | undefined> {
    return (await this.client.query("SELECT id, name, balance FROM bench_accounts WHERE id = $1", [id])).rows[0]
  }

  async balance(id: number): Promise<number> {
    return Number((await this.client.query("SELECT balance FROM bench_accounts WHERE id = $1", [id])).rows[0].balance)
  }

  /**
   * Transactions the server has counted in this database (commits + rollbacks). A statement outside a
   * transaction block is a transaction of its own, so the difference over a run is a server-side count
   * of the work a contender really did. Backends report their counts at the end of a transaction,
   * at most once a second, and when they exit: read it after the pool is closed.
   */
  async transactions(): Promise<number> {
    await this.client.query("SELECT pg_stat_clear_snapshot()")
    const result = await this.client.query(
      "SELECT (xact_commit + xact_rollback)::float8 AS n FROM pg_stat_database WHERE datname = current_database()"
    )
    return Number(result.rows[0].n)
  }

  /** Backends by state for one application_name (our own admin connection excluded). */
  async view(applicationName: string): Promise<ServerView> {
    const result = await this.client.query(
      `SELECT coalesce(state, 'unknown') AS state, count(*)::int AS n FROM pg_stat_activity
       WHERE application_name = $1 AND pid <> pg_backend_pid() GROUP BY 1`,
      [applicationName]
    )
    const byState: Record<string, number> = {}
    let total = 0
    for (const r of result.rows) {
      byState[r.state] = r.n
      total += r.n
    }
    return { total, byState }
  }

  /** Polls until no backend of `applicationName` is left, up to `ms`; returns the last view. */
  async waitGone(applicationName: string, ms: number): Promise<ServerView> {
    const deadline = Date.now() + ms
    for (;;) {
      const view = await this.view(applicationName)
      if (view.total === 0 || Date.now() >= deadline) return view
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  /** Ends every backend of `applicationName` (leftovers of a run), so the next run starts clean. */
  async terminate(applicationName: string): Promise<number> {
    const result = await this.client.query(
      "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
      [applicationName]
    )
    await this.waitGone(applicationName, 2_000)
    return Number(result.rows[0].n)
  }

  async end(): Promise<void> {
    await this.client.end()
  }
}
