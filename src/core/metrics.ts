/**
 * The pool's metrics, defined once for every edition: names, units and attributes after the
 * OpenTelemetry database-client conventions (`db.client.connection.*`), plus pg-warden's own
 * (`pg_warden.*`), and which pool event moves which metric. Each edition supplies a `MetricSink`,
 * three constructors over its own `Metric` module, and gets the pool's `PoolEvents` back.
 *
 * @internal
 */
import type { PoolEvents } from "./events.js"
import type { ReleaseOutcome } from "./session.js"

export type Attributes = Readonly<Record<string, string | number>>

/** An edition's metric constructors; each returns the function that records one value. */
export interface MetricSink {
  readonly counter: (name: string, description: string, unit: string, attributes: Attributes) => (delta: number) => void
  readonly gauge: (name: string, description: string, unit: string, attributes: Attributes) => (value: number) => void
  readonly histogram: (
    name: string,
    description: string,
    unit: string,
    boundaries: ReadonlyArray<number>,
    attributes: Attributes
  ) => (value: number) => void
}

/** The metric names, for users' dashboards and the tests. */
export const MetricNames = {
  count: "db.client.connection.count",
  idleMax: "db.client.connection.idle.max",
  idleMin: "db.client.connection.idle.min",
  max: "db.client.connection.max",
  pendingRequests: "db.client.connection.pending_requests",
  timeouts: "db.client.connection.timeouts",
  createTime: "db.client.connection.create_time",
  waitTime: "db.client.connection.wait_time",
  useTime: "db.client.connection.use_time",
  releases: "pg_warden.connection.releases",
  cancels: "pg_warden.cancels",
  terminations: "pg_warden.terminations",
  cleanupDuration: "pg_warden.cleanup.duration",
  audits: "pg_warden.audits",
  auditDiscrepancies: "pg_warden.audit.discrepancies"
} as const

/** Seconds, from half a millisecond to 10 s (OpenTelemetry's unit for durations is the second). */
const DURATION_BOUNDARIES = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

const OUTCOMES: ReadonlyArray<ReleaseOutcome> = ["reused", "rolledBack", "reset", "cancelled", "closed", "terminated"]

/** What the metrics read of the pool. */
export interface Counted {
  counts(): { readonly idle: number; readonly used: number; readonly pending: number }
}

/**
 * The pool's events as metric updates. `attributes` are the pool's own (`db.client.connection.pool.name`,
 * `server.address`, `server.port`); `pool` is read when counts may have changed (it is created after the
 * events it is given, hence the function).
 */
export const poolMetrics = (
  sink: MetricSink,
  attributes: Attributes,
  limits: { readonly maxConnections: number; readonly minConnections: number },
  pool: () => Counted | undefined
): PoolEvents => {
  const with_ = (extra: Attributes): Attributes => ({ ...attributes, ...extra })
  const idle = sink.gauge(
    MetricNames.count,
    "connections by state",
    "{connection}",
    with_({ "db.client.connection.state": "idle" })
  )
  const used = sink.gauge(
    MetricNames.count,
    "connections by state",
    "{connection}",
    with_({ "db.client.connection.state": "used" })
  )
  const pending = sink.gauge(MetricNames.pendingRequests, "fibers waiting for a connection", "{request}", attributes)
  sink.gauge(MetricNames.max, "the most connections the pool opens", "{connection}", attributes)(limits.maxConnections)
  sink.gauge(
    MetricNames.idleMax,
    "the most idle connections the pool keeps",
    "{connection}",
    attributes
  )(limits.maxConnections)
  sink.gauge(
    MetricNames.idleMin,
    "the idle connections the pool keeps open",
    "{connection}",
    attributes
  )(limits.minConnections)
  const timeouts = sink.counter(MetricNames.timeouts, "acquire timeouts", "{timeout}", attributes)
  const createTime = sink.histogram(
    MetricNames.createTime,
    "time to open a connection",
    "s",
    DURATION_BOUNDARIES,
    attributes
  )
  const waitTime = sink.histogram(
    MetricNames.waitTime,
    "time waiting for a connection",
    "s",
    DURATION_BOUNDARIES,
    attributes
  )
  const useTime = sink.histogram(
    MetricNames.useTime,
    "time a connection was held",
    "s",
    DURATION_BOUNDARIES,
    attributes
  )
  const releases = Object.fromEntries(
    OUTCOMES.map((outcome) => [
      outcome,
      sink.counter(
        MetricNames.releases,
        "lease ends, by what the release protocol did",
        "{release}",
        with_({ "pg_warden.release.outcome": outcome })
      )
    ])
  ) as Record<ReleaseOutcome, (delta: number) => void>
  /** The instrument of one label value, made at its first use (the label values are few and fixed). */
  const byLabel = <F>(make: (key: string) => F) => {
    const made = new Map<string, F>()
    return (key: string): F => {
      let instrument = made.get(key)
      if (instrument === undefined) {
        instrument = make(key)
        made.set(key, instrument)
      }
      return instrument
    }
  }
  const cancels = byLabel((key) => {
    const [via, outcome] = key.split("/") as [string, string]
    return sink.counter(
      MetricNames.cancels,
      "cancels sent for interrupted statements",
      "{cancel}",
      with_({ "pg_warden.cancel.via": via, "pg_warden.cancel.outcome": outcome })
    )
  })
  const terminations = byLabel((outcome) =>
    sink.counter(
      MetricNames.terminations,
      "backends ended from the server side, by whether the server confirmed it",
      "{termination}",
      with_({ "pg_warden.termination.outcome": outcome })
    )
  )
  const cleanupDurations = byLabel((step) =>
    sink.histogram(
      MetricNames.cleanupDuration,
      "time a step of the release protocol took",
      "s",
      DURATION_BOUNDARIES,
      with_({ "pg_warden.cleanup.step": step })
    )
  )
  const audits = Object.fromEntries(
    (["ok", "discrepancies", "failed"] as const).map((result) => [
      result,
      sink.counter(
        MetricNames.audits,
        "periodic audits, by result",
        "{audit}",
        with_({ "pg_warden.audit.result": result })
      )
    ])
  ) as Record<"ok" | "discrepancies" | "failed", (delta: number) => void>
  const discrepancies = Object.fromEntries(
    (["unknownToPool", "dirtyIdle", "missingOnServer"] as const).map((kind) => [
      kind,
      sink.counter(
        MetricNames.auditDiscrepancies,
        "backends the periodic audit found out of step with the pool, by kind",
        "{backend}",
        with_({ "pg_warden.audit.discrepancy": kind })
      )
    ])
  ) as Record<"unknownToPool" | "dirtyIdle" | "missingOnServer", (delta: number) => void>
  const refresh = () => {
    const counts = pool()?.counts()
    if (counts === undefined) return
    idle(counts.idle)
    used(counts.used)
    pending(counts.pending)
  }
  return {
    connected: (ms) => {
      createTime(ms / 1000)
      refresh()
    },
    acquired: (ms) => {
      waitTime(ms / 1000)
      refresh()
    },
    released: (outcome, ms) => {
      useTime(ms / 1000)
      releases[outcome](1)
      refresh()
    },
    timedOut: () => {
      timeouts(1)
      refresh()
    },
    cancelSent: (via, outcome) => cancels(`${via}/${outcome}`)(1),
    terminated: (outcome) => terminations(outcome)(1),
    changed: refresh,
    cleanupStep: (step, ms) => cleanupDurations(step)(ms / 1000),
    audited: (report) => {
      audits[report.ok ? "ok" : "discrepancies"](1)
      discrepancies.unknownToPool(report.unknownToPool.length)
      discrepancies.dirtyIdle(report.dirtyIdle.length)
      discrepancies.missingOnServer(report.missingOnServer.length)
    },
    auditFailed: () => audits.failed(1)
  }
}
