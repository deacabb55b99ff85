/**
 * The pool's metrics (issue #11), on the Effect 3 edition, read back through `@effect/opentelemetry`
 * and an OpenTelemetry metric reader, as an operator's exporter would see them: every named metric
 * moves as the pool does when it is used, exhausted, interrupted and has a backend killed. Counts of
 * connections are checked against `pg_stat_activity`.
 */
import * as Metrics from "@effect/opentelemetry/Metrics"
import * as Resource from "@effect/opentelemetry/Resource"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, inject, it } from "@effect/vitest"
import { type DataPoint, type MetricData, MetricReader } from "@opentelemetry/sdk-metrics"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { MetricNames } from "../src/core/metrics.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import { uniqueAppName } from "./support/admin.js"
import { configFor, scopedAdmin } from "./support/warden.js"
import "./support/context.js"

const url = inject("databaseUrl")

/** A reader the test collects from on demand. */
class TestReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** Every data point of `name` whose attributes include the pool's name `app` (and `extra`). */
const points = async (reader: TestReader, name: string, app: string, extra: Record<string, string> = {}) => {
  const { resourceMetrics } = await reader.collect()
  const metrics: Array<MetricData> = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)
  return metrics
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as Array<DataPoint<unknown>>)
    .filter(
      (point) =>
        point.attributes["db.client.connection.pool.name"] === app &&
        Object.entries(extra).every(([key, value]) => point.attributes[key] === value)
    )
}

/** The single value of a counter or gauge (0 when it has no data point yet). */
const gaugeOrCount = async (reader: TestReader, name: string, app: string, extra: Record<string, string> = {}) => {
  const found = await points(reader, name, app, extra)
  expect(found.length, `${name} ${JSON.stringify(extra)}: ${found.length} data points`).toBeLessThanOrEqual(1)
  return (found[0]?.value as number | undefined) ?? 0
}

/** How many values a histogram recorded. */
const countOf = async (reader: TestReader, name: string, app: string) => {
  const found = await points(reader, name, app)
  return (found[0]?.value as { count?: number } | undefined)?.count ?? 0
}

describe("metrics", () => {
  it.scopedLive(
    "every named metric moves with the pool: statements, an exhausted pool, an interruption, a killed backend",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("metrics")
        const admin = yield* scopedAdmin(url)
        const reader = new TestReader()
        const layer = Layer.merge(
          WardenClient.layer(
            configFor(url, app, {
              maxConnections: 2,
              acquireTimeout: "300 millis",
              metrics: true,
              auditInterval: "200 millis"
            })
          ),
          Metrics.layer(() => reader).pipe(Layer.provide(Resource.layer({ serviceName: "pg-warden-test" })))
        )
        const context = yield* Layer.build(layer)
        const sql = Context.get(context, SqlClient.SqlClient)
        const pool = Context.get(context, WardenPool.WardenPool)
        const read = (f: () => Promise<number>) => Effect.promise(f)

        // The limits, as configured.
        expect(yield* read(() => gaugeOrCount(reader, MetricNames.max, app))).toBe(2)
        expect(yield* read(() => gaugeOrCount(reader, MetricNames.idleMax, app))).toBe(2)
        expect(yield* read(() => gaugeOrCount(reader, MetricNames.idleMin, app))).toBe(0)

        // Five statements, one after the other: one connection, five leases, all reused.
        for (let i = 0; i < 5; i++) yield* sql`select 1`
        const afterStatements = yield* pool.stats
        expect(yield* read(() => countOf(reader, MetricNames.createTime, app))).toBe(afterStatements.counters.created)
        expect(yield* read(() => countOf(reader, MetricNames.waitTime, app))).toBe(afterStatements.counters.acquired)
        expect(yield* read(() => countOf(reader, MetricNames.useTime, app))).toBe(afterStatements.counters.acquired)
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.releases, app, { "pg_warden.release.outcome": "reused" }))
        ).toBe(afterStatements.counters.reused)
        const serverCount = (yield* Effect.promise(() => admin.backends(app))).length
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.count, app, { "db.client.connection.state": "idle" }))
        ).toBe(serverCount)
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.count, app, { "db.client.connection.state": "used" }))
        ).toBe(0)

        // Both connections held by long transactions: the gauge shows them used, and a third caller times out.
        const holders = yield* Effect.forEach([1, 2], () => Effect.fork(sql.withTransaction(sql`select pg_sleep(5)`)))
        const busy = yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.filter((b) => b.state === "active" && b.query.includes("pg_sleep(5)")).length === 2,
            { timeoutMs: 5_000, message: "two pg_sleep(5) never ran" }
          )
        )
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.count, app, { "db.client.connection.state": "used" }))
        ).toBe(2)
        expect(Exit.isFailure(yield* Effect.exit(sql`select 1`))).toBe(true)
        expect(yield* read(() => gaugeOrCount(reader, MetricNames.timeouts, app))).toBe(1)
        expect(yield* read(() => gaugeOrCount(reader, MetricNames.pendingRequests, app))).toBe(0)

        // One holder interrupted: its statement is cancelled (a cancel is sent) and its lease ends cancelled. The
        // cancel channel's answer may arrive just after the statement ended with 57014: wait for the count.
        yield* Fiber.interrupt(holders[0]!)
        yield* Effect.promise(() =>
          admin.waitFor(
            () => points(reader, MetricNames.cancels, app),
            (found) => found.length > 0,
            { timeoutMs: 3_000, message: "no cancel recorded" }
          )
        )
        const cancels =
          (yield* read(() =>
            gaugeOrCount(reader, MetricNames.cancels, app, {
              "pg_warden.cancel.via": "channel",
              "pg_warden.cancel.outcome": "delivered"
            })
          )) +
          (yield* read(() =>
            gaugeOrCount(reader, MetricNames.cancels, app, {
              "pg_warden.cancel.via": "protocol",
              "pg_warden.cancel.outcome": "delivered"
            })
          ))
        const allCancels = yield* Effect.promise(() => points(reader, MetricNames.cancels, app))
        expect(cancels, JSON.stringify(allCancels.map((p) => [p.attributes, p.value]))).toBe(1)
        expect(
          yield* read(() =>
            gaugeOrCount(reader, MetricNames.releases, app, { "pg_warden.release.outcome": "cancelled" })
          )
        ).toBe(1)
        // The release protocol rolled the interrupted transaction back, and timed that step.
        const rollbackStep = yield* Effect.promise(() =>
          points(reader, MetricNames.cleanupDuration, app, { "pg_warden.cleanup.step": "rollback" })
        )
        expect((rollbackStep[0]?.value as { count?: number } | undefined)?.count).toBeGreaterThanOrEqual(1)

        // The other holder's backend killed from outside: its lease ends with the session closed or terminated.
        const victim = busy.filter((b) => b.query.includes("pg_sleep(5)")).map((b) => b.pid)
        yield* Effect.promise(() =>
          admin.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [victim])
        )
        yield* Effect.exit(Fiber.join(holders[1]!))
        const stats = yield* pool.stats
        const ended =
          (yield* read(() =>
            gaugeOrCount(reader, MetricNames.releases, app, { "pg_warden.release.outcome": "closed" })
          )) +
          (yield* read(() =>
            gaugeOrCount(reader, MetricNames.releases, app, { "pg_warden.release.outcome": "terminated" })
          ))
        expect(ended).toBe(stats.counters.closed + stats.counters.terminated)
        expect(ended).toBeGreaterThanOrEqual(1)
        // Its backend was ended from the server side, and the pool's terminate found it gone (or ended it).
        const terminations = yield* Effect.promise(() => points(reader, MetricNames.terminations, app))
        expect(terminations.reduce((n, p) => n + (p.value as number), 0)).toBeGreaterThanOrEqual(1)
        // The periodic audit ran and counted what it found (a discrepancy while the killed session was still held is fine).
        const audits = yield* Effect.promise(() =>
          admin.waitFor(
            () => points(reader, MetricNames.audits, app),
            (found) => found.reduce((n, p) => n + (p.value as number), 0) >= 1,
            { timeoutMs: 3_000, message: "no periodic audit counted" }
          )
        )
        expect(audits.every((p) => p.attributes["pg_warden.audit.result"] !== "failed" || p.value === 0)).toBe(true)
        expect(yield* Effect.promise(() => points(reader, MetricNames.auditDiscrepancies, app))).toHaveLength(3)

        // Afterwards nothing is used, and the idle count is what the server shows.
        yield* sql`select 1`
        const server = (yield* Effect.promise(() => admin.backends(app))).length
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.count, app, { "db.client.connection.state": "used" }))
        ).toBe(0)
        expect(
          yield* read(() => gaugeOrCount(reader, MetricNames.count, app, { "db.client.connection.state": "idle" }))
        ).toBe(server)
        expect(yield* read(() => countOf(reader, MetricNames.createTime, app))).toBe(
          (yield* pool.stats).counters.created
        )
      })
  )

  it.scopedLive("without `metrics: true` the pool records none", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("no-metrics")
      const reader = new TestReader()
      const layer = Layer.merge(
        WardenClient.layer(configFor(url, app, { maxConnections: 1 })),
        Metrics.layer(() => reader).pipe(Layer.provide(Resource.layer({ serviceName: "pg-warden-test" })))
      )
      const context = yield* Layer.build(layer)
      yield* Context.get(context, SqlClient.SqlClient)`select 1`
      expect(yield* Effect.promise(() => points(reader, MetricNames.useTime, app))).toHaveLength(0)
    })
  )
})
