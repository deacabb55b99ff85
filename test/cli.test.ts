/**
 * The `pg-warden` command line, run as a child process from source (`node --import tsx cli/src/main.ts`)
 * against the test server: its output and exit code, and what the server shows afterwards (nothing of the
 * run's own `application_name`s, no table left). Covers the error cases a user meets first: a bad URL, no
 * URL, an unreachable host, an unknown database, a refused password, insufficient privileges, bad options.
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import pg from "pg"
import { Admin } from "./support/admin.js"
import "./support/context.js"
import { findFreePort, type PrivateServer, startPrivateServer } from "./support/embedded.js"
import { withUrl } from "./support/urls.js"

const databaseUrl = inject("databaseUrl")
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly ms: number
}

/** Runs the CLI from source; `DATABASE_URL` is unset unless given in `env`. Killed after `timeoutMs`. */
const cli = (args: ReadonlyArray<string>, options: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
  new Promise<Run>((resolve, reject) => {
    const started = Date.now()
    const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1", ...options.env }
    if (options.env?.DATABASE_URL === undefined) delete env.DATABASE_URL
    const child = spawn(process.execPath, ["--import", "tsx", "cli/src/main.ts", ...args], { cwd: root, env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    // Generous: the tests of this file run concurrently, each CLI process compiling its sources with tsx on
    // a machine of two cores shared with the other test files.
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 100_000)
    child.on("error", reject)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: Date.now() - started })
    })
  })

const show = (run: Run) => `exit ${run.code}\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`

let admin: Admin

beforeAll(async () => {
  admin = await Admin.connect(databaseUrl)
})

afterAll(async () => {
  await admin?.close()
})

/** Nothing of this run on the server: no backend of `app` (or of the apps matching `like`), not its table. */
const expectNothingLeft = async (where: { app?: string; like?: string; table?: string }) => {
  const rows = await admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 OR application_name LIKE $2`,
    [where.app ?? null, where.like ?? null]
  )
  expect(rows[0]?.n, `backends left for ${where.app ?? where.like}`).toBe(0)
  if (where.table !== undefined) {
    const tables = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class WHERE relname = $1`, [
      where.table
    ])
    expect(tables[0]?.n, `table ${where.table} left`).toBe(0)
  }
}

describe.concurrent("pg-warden CLI", { timeout: 180_000 }, () => {
  // The longest test first: it mostly waits (on deadlines), so the others run alongside it.
  it("demo runs both editions' contenders next to both @effect/sql-pg majors on every scenario, prints the table and verdicts, and leaves nothing behind", async () => {
    const run = await cli(["demo", "--url", databaseUrl, "--duration", "10", "--json"], { timeoutMs: 170_000 })
    expect(run.code, show(run)).toBe(0)
    // Progress and the human report go to stderr in --json mode (not a TTY: periodic lines, no redraws).
    expect(run.stderr).toContain("pg-warden demo")
    expect(run.stderr).not.toContain("\x1b[2K")
    expect(run.stderr).toMatch(/Results \(/)
    expect(run.stderr).toMatch(/scenario +contender +ok +interrupted +p50 +p99 +max +hung +collateral/)
    expect(run.stderr).toMatch(/asyncpg repro +@effect\/sql-pg 0\.53/)
    expect(run.stderr).toMatch(/^ +pg-warden \(Effect 3\) +\d+/m)
    expect(run.stderr).toMatch(/^ +pg-warden \(Effect 4\) +\d+/m)
    expect(run.stderr).toMatch(
      /Verdict\n {2}[✔✘] @effect\/sql-pg 0\.53 .+\.\n {2}[✔✘] pg-warden \(Effect 3\) .+\.\n {2}[✔✘] @effect\/sql-pg 4 .+\.\n {2}[✔✘] pg-warden \(Effect 4\) .+\./
    )
    const report = JSON.parse(run.stdout) as {
      runs: Array<{
        scenario: string
        contender: string
        applicationName: string
        interrupted: number
        hung: number
        collateral: number
        running: number
        idleInTransaction: number
        committedAfterClose: number
        left: number
        notes: Array<string>
      }>
      verdicts: Array<{ contender: string; ok: boolean; text: string }>
    }
    const contenders = ["sqlpg", "warden", "sqlpg4", "warden4"]
    const scenarios = ["repro", "storm", "saturation", "blackhole", "daemon-close"]
    expect(report.runs.map((r) => `${r.scenario}/${r.contender}`)).toEqual(
      scenarios.flatMap((s) => contenders.map((c) => `${s}/${c}`))
    )
    expect(new Set(report.runs.map((r) => r.applicationName)).size).toBe(20)
    for (const r of report.runs.filter((r) => r.scenario !== "daemon-close")) {
      expect(r.interrupted, `${r.scenario}/${r.contender}`).toBeGreaterThan(0)
    }
    // pg-warden's promise, as the demo measured it, on both editions.
    for (const r of report.runs.filter((r) => r.contender.startsWith("warden"))) {
      expect({ ...r, applicationName: undefined }, `${r.scenario}/${r.contender}`).toMatchObject({
        hung: 0,
        collateral: 0,
        running: 0,
        idleInTransaction: 0,
        committedAfterClose: 0,
        left: 0,
        notes: []
      })
    }
    // The two failures the demo is there to show on @effect/sql-pg 4 (pg-warden's Effect 4 edition has neither).
    const sqlPg4 = (scenario: string) => report.runs.find((r) => r.scenario === scenario && r.contender === "sqlpg4")!
    expect(sqlPg4("blackhole").hung + sqlPg4("blackhole").idleInTransaction).toBeGreaterThan(0)
    expect(sqlPg4("daemon-close").committedAfterClose).toBeGreaterThan(0)
    expect(report.verdicts.map((v) => [v.contender, v.ok])).toEqual([
      ["sqlpg", false],
      ["warden", true],
      ["sqlpg4", false],
      ["warden4", true]
    ])
    // Whatever the contenders did, the demo cleaned up after each run.
    await expectNothingLeft({ like: "pg-warden-demo-%" })
  }, 180_000)

  it("--help lists the commands, and every command has --help", async () => {
    const [top, check, demo] = await Promise.all([cli(["--help"]), cli(["check", "--help"]), cli(["demo", "--help"])])
    expect(top.code, show(top)).toBe(0)
    expect(top.stdout).toContain("check")
    expect(top.stdout).toContain("demo")
    expect(check.code, show(check)).toBe(0)
    expect(check.stdout).toContain("--url")
    expect(check.stdout).toContain("--json")
    expect(check.stdout).toContain("non-destructive")
    expect(demo.code, show(demo)).toBe(0)
    expect(demo.stdout).toContain("--duration")
  })

  it("check passes against the test server, prints a line per check, and leaves nothing behind", async () => {
    const run = await cli(["check", "--url", databaseUrl, "--storm", "1"])
    expect(run.code, show(run)).toBe(0)
    for (const title of [
      "connect",
      "privileges",
      "max_connections headroom",
      "idle_in_transaction_session_timeout",
      "statement_timeout",
      "client_connection_check_interval",
      "TCP keepalive",
      "cancel round trip",
      "interrupt mid-statement",
      "interrupt mid-transaction (idle)",
      "interrupt mid-transaction (query)",
      "interruption storm",
      "nothing left behind"
    ]) {
      expect(run.stdout, `${title}\n${show(run)}`).toMatch(
        new RegExp(`^ {2}(PASS|WARN) {2}${title.replace(/[()]/g, "\\$&")}`, "m")
      )
    }
    expect(run.stdout).not.toMatch(/^ {2}FAIL/m)
    expect(run.stdout).toMatch(/^ {2}PASS {2}\d+ passed, \d+ warnings?, 0 failed/m)
    // The URL's password never appears.
    const password = new URL(databaseUrl).password
    if (password !== "") expect(run.stdout).not.toContain(`:${password}@`)
    const app = /application_name (pg-warden-check-[0-9a-f]+)/.exec(run.stdout)?.[1]
    const table = /temporary table (pg_warden_check_[0-9a-f]+) created/.exec(run.stdout)?.[1]
    expect(app, show(run)).toBeDefined()
    expect(table, show(run)).toBeDefined()
    await expectNothingLeft({ app: app!, table: table! })
  })

  it("check --json prints a machine-readable report", async () => {
    const run = await cli(["check", "--url", databaseUrl, "--storm", "1", "--json"])
    expect(run.code, show(run)).toBe(0)
    const report = JSON.parse(run.stdout) as {
      ok: boolean
      applicationName: string
      checks: Array<{ id: string; status: string; detail: string; data?: { table?: string } }>
      summary: { fail: number }
    }
    expect(report.ok).toBe(true)
    expect(report.summary.fail).toBe(0)
    expect(report.checks.map((c) => c.id)).toEqual(
      expect.arrayContaining(["connect", "privileges", "cancel", "mid-statement", "storm", "cleanup"])
    )
    for (const c of report.checks) expect(["pass", "warn"], `${c.id}: ${c.detail}`).toContain(c.status)
    expect(report.checks.find((c) => c.id === "cancel")?.status).toBe("pass")
    const table = report.checks.find((c) => c.id === "privileges")?.data?.table
    expect(table).toMatch(/^pg_warden_check_[0-9a-f]+$/)
    await expectNothingLeft({ app: report.applicationName, table: table! })
  })

  it("a malformed URL, or none, is a usage error (exit 2)", async () => {
    const [scheme, garbage, none, badOption, unknownOption] = await Promise.all([
      cli(["check", "--url", "mysql://root@localhost/db"]),
      cli(["check", "--url", "postgres://a:b@[zz/"]),
      cli(["check"]),
      cli(["check", "--url", databaseUrl, "--storm", "0"]),
      cli(["check", "--bogus"])
    ])
    expect(scheme.code, show(scheme)).toBe(2)
    expect(scheme.stderr).toMatch(/invalid database URL .*must start with postgres:\/\//)
    expect(garbage.code, show(garbage)).toBe(2)
    expect(garbage.stderr).toMatch(/invalid database URL .*not a valid URL/)
    expect(garbage.stderr).not.toContain(":b@")
    expect(none.code, show(none)).toBe(2)
    expect(none.stderr).toMatch(/no database URL: pass --url .* or set DATABASE_URL/)
    expect(badOption.code, show(badOption)).toBe(2)
    expect(badOption.stderr).toMatch(/--storm must be between 1 and 30/)
    expect(unknownOption.code, show(unknownOption)).toBe(2)
  })

  it("an unreachable server, an unknown host or an unknown database is a clear error (exit 2)", async () => {
    const port = await findFreePort()
    const refusedUrl = withUrl(databaseUrl, (u) => {
      u.hostname = "127.0.0.1"
      u.port = String(port)
    })
    const [refused, refusedJson, unknownHost, unknownDb, demo] = await Promise.all([
      cli(["check", "--url", refusedUrl]),
      cli(["check", "--url", refusedUrl, "--json"]),
      cli(["check", "--url", withUrl(databaseUrl, (u) => (u.hostname = "no-such-host.invalid"))]),
      cli(["check", "--url", withUrl(databaseUrl, (u) => (u.pathname = "/warden_cli_no_such_db"))]),
      cli(["demo", "--url", refusedUrl, "--duration", "10"])
    ])
    expect(refused.code, show(refused)).toBe(2)
    expect(refused.stderr).toContain(`connection refused by 127.0.0.1:${port}`)
    expect(refusedJson.code, show(refusedJson)).toBe(2)
    const report = JSON.parse(refusedJson.stdout) as { ok: boolean; error: { kind: string; message: string } }
    expect(report.ok).toBe(false)
    expect(report.error.kind).toBe("connect")
    expect(report.error.message).toContain("connection refused")
    expect(unknownHost.code, show(unknownHost)).toBe(2)
    expect(unknownHost.stderr).toMatch(/unknown host no-such-host\.invalid|cannot reach no-such-host\.invalid/)
    expect(unknownDb.code, show(unknownDb)).toBe(2)
    expect(unknownDb.stderr).toContain('database "warden_cli_no_such_db" does not exist')
    expect(demo.code, show(demo)).toBe(2)
    expect(demo.stderr).toContain("connection refused")
  })

  describe("a refused password", () => {
    let server: PrivateServer | undefined
    let url = databaseUrl

    beforeAll(async () => {
      // A trust-auth server accepts any password: then use a private (scram) server for this case.
      const probe = new pg.Client({ connectionString: withUrl(databaseUrl, (u) => (u.password = "wrong-password")) })
      probe.on("error", () => {})
      const trusting = await probe.connect().then(
        () => true,
        () => false
      )
      await probe.end().catch(() => undefined)
      if (trusting) {
        server = await startPrivateServer()
        url = server.url
      }
    }, 60_000)

    afterAll(async () => {
      await server?.dispose()
    })

    it("is an authentication error (exit 2) that does not show the password", async () => {
      const run = await cli(["check", "--url", withUrl(url, (u) => (u.password = "wrong-password"))])
      expect(run.code, show(run)).toBe(2)
      const user = new URL(url).username
      expect(run.stderr).toContain(`password authentication failed for user "${user}"`)
      expect(run.stdout + run.stderr).not.toContain("wrong-password")
    })
  })

  it("insufficient privileges (no TEMP on the database) is a clear error (exit 2)", async () => {
    const suffix = randomBytes(4).toString("hex")
    const role = `warden_cli_nopriv_${suffix}`
    const database = `warden_cli_nopriv_${suffix}`
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'nopriv-${suffix}'`)
    try {
      await admin.query(`CREATE DATABASE ${database}`)
      await admin.query(`REVOKE TEMPORARY ON DATABASE ${database} FROM PUBLIC`)
      const url = withUrl(databaseUrl, (u) => {
        u.username = role
        u.password = `nopriv-${suffix}`
        u.pathname = `/${database}`
      })
      const [run, json] = await Promise.all([cli(["check", "--url", url]), cli(["check", "--url", url, "--json"])])
      expect(run.code, show(run)).toBe(2)
      expect(run.stdout).toMatch(/^ {2}PASS {2}connect/m)
      expect(run.stderr).toContain(
        `insufficient privileges: user "${role}" may not create temporary tables in database "${database}"`
      )
      expect(run.stderr).toContain(`GRANT TEMP ON DATABASE "${database}" TO "${role}"`)
      expect(json.code, show(json)).toBe(2)
      const report = JSON.parse(json.stdout) as { ok: boolean; error: { kind: string }; applicationName: string }
      expect(report.ok).toBe(false)
      expect(report.error.kind).toBe("privileges")
      await admin.waitForNoBackends(report.applicationName, 5_000)
    } finally {
      await admin
        .query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [database])
        .catch(() => undefined)
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined)
      await admin.query(`DROP ROLE IF EXISTS ${role}`)
    }
  })
})
