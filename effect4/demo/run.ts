/**
 * The demo's Effect 4 runner (`npm start` in the repository): `pg-warden demo` runs on Effect 3 and
 * Node 20, so it starts this file on effect4/'s Node 22 binary, once per run of an Effect 4
 * contender (`@effect/sql-pg` 4, or pg-warden's Effect 4 edition), with the job as JSON in argv[2]
 * (cli/src/runs.ts `RemoteJob`). It builds the contender's layer, runs the scenario's Effect 4 body
 * (../test/support/interruptions-effect4.ts) within the job's limit, closes the layer within its
 * deadline, and prints its stats as JSON lines (`RemoteLine`) while it runs and at the end. What the
 * server still shows afterwards is read by the parent, which also terminates leftovers.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { type FaultProxy, startProxy } from "../../cli/src/proxy.js"
import { encodeStats, makeStats, needsProxy, type RemoteJob, type RemoteLine, reporterFor } from "../../cli/src/runs.js"
import { Observer } from "../../src/core/observer.js"
import * as WardenClient from "../src/WardenClient.js"
import * as Bodies from "../test/support/interruptions-effect4.js"

const layers: Record<
  string,
  (url: string, app: string, connections: number) => Layer.Layer<SqlClient.SqlClient, unknown>
> = {
  sqlpg4: (url, app, connections) =>
    PgClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: connections }),
  warden4: (url, app, connections) =>
    WardenClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: connections })
}

const job = JSON.parse(process.argv[2] ?? "{}") as RemoteJob
const layer = layers[job.contender]
if (layer === undefined) {
  console.error(`unknown contender ${job.contender}; known: ${Object.keys(layers).join(", ")}`)
  process.exit(2)
}

const stats = makeStats()
const emit = (line: RemoteLine) => process.stdout.write(`${JSON.stringify(line)}\n`)
const ticker = setInterval(() => emit({ _tag: "Stats", stats: encodeStats(stats) }), 200)
const now = () => performance.now()

/** Host and port of the server behind `url`, for a fault proxy in front of it. */
const proxyTarget = (url: string) => {
  const parsed = new URL(url)
  return {
    host: parsed.hostname === "" ? "127.0.0.1" : parsed.hostname,
    port: parsed.port === "" ? 5432 : Number(parsed.port)
  }
}

const observer = await Observer.connect(job.url, { applicationName: "pg-warden-demo-observer-e4" })
const proxy: FaultProxy | undefined = needsProxy(job.spec) ? await startProxy(proxyTarget(job.url)) : undefined
const scope = Effect.runSync(Scope.make())
const closeLayer = () => Effect.runPromise(Scope.close(scope, Exit.void))

const run: Bodies.Run = {
  sql: undefined as unknown as SqlClient.SqlClient,
  server: observer,
  app: job.app,
  deadlines: job.deadlines,
  reporter: reporterFor(job.spec, stats),
  network:
    proxy === undefined
      ? undefined
      : { blackhole: () => proxy.setMode("blackhole"), pass: () => proxy.setMode("pass"), reset: () => proxy.reset() },
  closeLayer
}

const body = (withSql: Bodies.Run): Effect.Effect<void, Bodies.ScenarioFailure> => {
  const spec = job.spec
  switch (spec.kind) {
    case "repro":
      return Bodies.repro(withSql, spec.scenario, spec.budgetMs)
    case "storm":
      return Bodies.storm(withSql, spec.scenario)
    case "saturation":
      return Bodies.saturation(withSql, spec.scenario)
    case "blackhole":
      return Bodies.blackhole(withSql, spec.scenario)
    case "daemonClose":
      return Bodies.daemonClose(withSql, spec.scenario)
  }
}

const main = Effect.gen(function* () {
  const url = proxy !== undefined ? proxy.rewrite(job.url) : job.url
  const built = yield* Effect.forkDetach(Layer.buildWithScope(layer(url, job.app, job.connections), scope))
  const env = yield* Fiber.await(built).pipe(Effect.timeoutOption(15_000))
  if (env._tag === "None") stats.notes.push("the layer did not build within 15 s")
  else if (Exit.isFailure(env.value)) stats.notes.push(`the layer failed to build: ${Bodies.describeExit(env.value)}`)
  else {
    const sql = Context.get(env.value.value, SqlClient.SqlClient)
    const fiber = yield* Effect.forkDetach(body({ ...run, sql }))
    const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(job.limitMs))
    if (exit._tag === "None") {
      stats.notes.push(`the scenario did not finish within its ${Math.round(job.limitMs / 1000)} s limit`)
      yield* Bodies.interruptFork(fiber)
    } else if (Exit.isFailure(exit.value)) {
      stats.notes.push(`the scenario stopped: ${Bodies.describeExit(exit.value)}`)
    }
  }
  const closeStarted = now()
  const closer = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
  const closed = yield* Fiber.await(closer).pipe(Effect.timeoutOption(job.closeDeadlineMs))
  return closed._tag === "Some" ? now() - closeStarted : null
})

const closeMs = await Effect.runPromise(main)
clearInterval(ticker)
emit({ _tag: "Done", stats: encodeStats(stats), closeMs })
await proxy?.close()
await observer.close()
// A contender whose interruption never ended may still hold a socket or a timer: the parent reads the
// server and terminates leftovers, so this process is done.
process.exit(0)
