/**
 * One process of the fleet test (test/budget.test.ts): its own pg-warden pool (Effect 3 edition) under interruption
 * load for a while, then the Layer closed and the process gone. Run as
 * `node --import tsx test/support/fleet-worker.ts <json>`, the JSON being a `FleetWorkerArgs`; prints one JSON line
 * (`FleetWorkerReport`) at the end.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { WardenClient } from "../../src/index.js"

export interface FleetWorkerArgs {
  readonly url: string
  readonly applicationName: string
  readonly maxConnections: number
  readonly controlConnections: number
  readonly pgbouncer: boolean
  readonly durationMs: number
  readonly fibers: number
}

export interface FleetWorkerReport {
  readonly completed: number
  readonly interrupted: number
  /** Failures of operations nobody interrupted, by message (none expected). */
  readonly failures: ReadonlyArray<string>
}

const args = JSON.parse(process.argv[2] ?? "{}") as FleetWorkerArgs

const program = Effect.gen(function* () {
  const sql = yield* PgClient.PgClient
  const deadline = Date.now() + args.durationMs
  let completed = 0
  let interrupted = 0
  const failures: Array<string> = []
  // A listener too where LISTEN can work: its session is part of the budget.
  const listener = args.pgbouncer ? undefined : yield* Effect.fork(Stream.runDrain(sql.listen("fleet_budget")))
  const operation = (i: number) => {
    switch (i % 3) {
      case 0:
        return sql`select pg_sleep(${0.002 + Math.random() * 0.02})`
      case 1:
        return sql.withTransaction(Effect.andThen(sql`select 1`, sql`select pg_sleep(0.005)`))
      default:
        return sql`select ${i}::int as i`
    }
  }
  const loop = (seed: number) =>
    Effect.gen(function* () {
      let i = seed
      while (Date.now() < deadline) {
        i++
        const interrupt = Math.random() < 0.3
        const exit = yield* Effect.exit(
          interrupt ? Effect.timeout(operation(i), `${Math.floor(Math.random() * 10)} millis`) : operation(i)
        )
        if (exit._tag === "Success") completed++
        else if (interrupt && exit.cause._tag === "Fail" && exit.cause.error._tag === "TimeoutException") interrupted++
        else failures.push(String(exit.cause).slice(0, 200))
      }
    })
  yield* Effect.all(
    Array.from({ length: args.fibers }, (_, seed) => loop(seed * 1000)),
    { concurrency: "unbounded", discard: true }
  )
  if (listener !== undefined) yield* Fiber.interrupt(listener)
  return { completed, interrupted, failures } satisfies FleetWorkerReport
})

const layer = WardenClient.layer({
  url: Redacted.make(args.url),
  applicationName: args.applicationName,
  maxConnections: args.maxConnections,
  controlConnections: args.controlConnections,
  pgbouncer: args.pgbouncer
})

const report = await Effect.runPromise(program.pipe(Effect.provide(layer)))
process.stdout.write(`${JSON.stringify(report)}\n`)
