/**
 * The floor under any Effect 3 client built on `pg`: how fast can a statement be when each
 * operation is its own fiber (as in the main benchmark, so it can be interrupted) and the driver
 * call is wrapped in `Effect.async`, before any client logic runs?
 *
 *   npx tsx bench/floor.ts [--op select1|row] [--clients 64] [--rounds 5] [--duration 1500]
 *
 * Rows, interleaved round by round in one process on one PostgreSQL (DATABASE_URL, or an embedded
 * server), pool of 8 everywhere:
 * - `pg Pool`: `pool.query(...)` promises, the main benchmark's reference;
 * - `fiber + async`: a fiber per operation running `Effect.async` around the same `pool.query`;
 * - `fiber + async + canceler`: the same, with an interruption handler (what any client that can
 *   cancel needs); no cancel logic runs, the handler is only registered;
 * - `pg-warden`, `@effect/sql-pg 0.53`: the clients themselves, `sql\`…\`` in a fiber per operation.
 * Ratios are per round against `pg Pool`; CPU is `process.cpuUsage` over the measured window.
 * One process shares one heap, so this is a decomposition, not a contest: the contest is `run.ts`.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import { WardenClient } from "../src/index.js"
import { Admin, ROWS, startServer } from "./lib/server.js"
import { median, minMax } from "./lib/stats.js"

const argv = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}
const op = option("--op") ?? "select1"
const clients = Number(option("--clients") ?? 64)
const rounds = Number(option("--rounds") ?? 5)
const durationMs = Number(option("--duration") ?? 1500)
if (op !== "select1" && op !== "row") throw new Error("--op is select1 or row")

type Start = (done: () => void) => void

/** A closed loop of `clients` callers for `durationMs`, after a short warm-up. */
const measure = async (start: Start): Promise<{ opsPerSecond: number; cpuPerOp: number }> => {
  const warmUntil = Date.now() + 200
  while (Date.now() < warmUntil) await new Promise<void>((resolve) => start(resolve))
  let completed = 0
  let stop = false
  const began = performance.now()
  const cpu = process.cpuUsage()
  await new Promise<void>((finish) => {
    let active = clients
    const next = () => {
      if (stop) {
        if (--active === 0) finish()
        return
      }
      start(() => {
        completed++
        next()
      })
    }
    for (let i = 0; i < clients; i++) next()
    setTimeout(() => {
      stop = true
    }, durationMs)
  })
  const elapsed = performance.now() - began
  const used = process.cpuUsage(cpu)
  return { opsPerSecond: (completed / elapsed) * 1000, cpuPerOp: (used.user + used.system) / completed }
}

const server = await startServer()
const admin = await Admin.open(server.url)
await admin.createSchema()
await admin.close()

const url = server.url
const pool = new pg.Pool({ connectionString: url, max: 8 })
const bare = ManagedRuntime.make(Layer.empty)
const warden = ManagedRuntime.make(WardenClient.layer({ url: Redacted.make(url), maxConnections: 8 }))
const sqlpg = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(url), maxConnections: 8 }))
const wardenSql = await warden.runPromise(SqlClient.SqlClient)
const sqlpgSql = await sqlpg.runPromise(SqlClient.SqlClient)
await bare.runPromise(Effect.void)

const id = () => 1 + Math.floor(Math.random() * ROWS)
const ROW = "SELECT id, name, balance FROM bench_accounts WHERE id = $1"
const query = op === "select1" ? () => pool.query("SELECT 1 AS one") : () => pool.query(ROW, [id()])
const statement = (sql: SqlClient.SqlClient) =>
  op === "select1"
    ? () => sql`SELECT 1 AS one`
    : () => sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${id()}`

const inFiber =
  <R>(runtime: ManagedRuntime.ManagedRuntime<R, unknown>, make: () => Effect.Effect<unknown, unknown, R>): Start =>
  (done) => {
    runtime.runFork(make()).addObserver(() => done())
  }

const rows: Array<[string, Start]> = [
  [
    "pg Pool",
    (done) => {
      query().then(() => done())
    }
  ],
  [
    "fiber + async",
    inFiber(bare, () =>
      Effect.async<void>((resume) => {
        query().then(() => resume(Effect.void))
      })
    )
  ],
  [
    "fiber + async + canceler",
    inFiber(bare, () =>
      Effect.async<void>((resume) => {
        query().then(() => resume(Effect.void))
        return Effect.void
      })
    )
  ],
  ["pg-warden", inFiber(warden, statement(wardenSql))],
  ["@effect/sql-pg 0.53", inFiber(sqlpg, statement(sqlpgSql))]
]

const results = new Map<string, Array<{ opsPerSecond: number; cpuPerOp: number; ratio: number }>>()
for (let round = 1; round <= rounds; round++) {
  let reference = 0
  for (const [name, start] of rows) {
    const { opsPerSecond, cpuPerOp } = await measure(start)
    if (name === "pg Pool") reference = opsPerSecond
    const list = results.get(name) ?? []
    list.push({ opsPerSecond, cpuPerOp, ratio: opsPerSecond / reference })
    results.set(name, list)
  }
  console.error(`[floor] round ${round}/${rounds} done`)
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
console.log(`\n\`${op}\`, ${clients} callers, pool of 8, ${rounds} rounds × ${durationMs} ms (medians; min–max)\n`)
console.log("| row | ops/s | × pg Pool | CPU µs/op |")
console.log("| --- | ---: | ---: | ---: |")
for (const [name, list] of results) {
  const ops = list.map((r) => r.opsPerSecond)
  const [lo, hi] = minMax(ops) ?? [0, 0]
  const ratio = median(list.map((r) => r.ratio)) ?? 0
  const cpu = median(list.map((r) => r.cpuPerOp)) ?? 0
  console.log(
    `| ${name} | ${fmt(median(ops) ?? 0)} (${fmt(lo)}–${fmt(hi)}) | ${ratio.toFixed(2)}× | ${cpu.toFixed(0)} |`
  )
}

await warden.dispose()
await sqlpg.dispose()
await bare.dispose()
await pool.end()
await server.dispose()
