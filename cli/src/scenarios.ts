/**
 * The demo's runs (and what `check` reuses): the shared interruption scenarios
 * (./interruptions.ts, bodies in ./interruptions-effect3.ts) against each contender, with what they
 * report accumulated in a {@link RunStats}: interruption latencies, fibers that failed although
 * nobody interrupted them, and what the server showed afterwards.
 *
 * Every wait is bounded: a contender whose interruption never completes cannot hold the demo; the
 * hang is recorded, and the fiber is left to end whenever it does (its backends are terminated by
 * the runner).
 *
 * @since 0.1.0
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as WardenClient from "pg-warden/WardenClient"
import type * as Interruptions from "./interruptions.js"
import {
  blackhole,
  daemonClose,
  describeExit,
  interruptReported,
  probeReported,
  type Run,
  repro,
  type ScenarioFailure,
  saturation,
  storm
} from "./interruptions-effect3.js"
import { type FaultProxy, startProxy } from "./proxy.js"
import {
  applyStats,
  type Deadlines,
  needsProxy,
  type RemoteJob,
  type RemoteLine,
  type RunStats,
  reporterFor,
  reportTo,
  type Sample,
  type Scenario,
  type ScenarioSpec
} from "./runs.js"
import { CliError, countStates, type Observer, type StateCounts } from "./server.js"

export {
  type Deadlines,
  defaultDeadlines,
  demoScenarios,
  makeStats,
  type RunStats,
  reportTo,
  type Sample,
  type Scenario
} from "./runs.js"

/**
 * A client layer under test: an Effect 3 layer run in this process, or (`remote`) a contender run
 * by a process of its own (the Effect 4 clients, on effect4/'s Node 22 and dependency tree).
 *
 * @since 0.1.0
 * @category models
 */
export interface Contender {
  readonly id: string
  readonly label: string
  readonly layer?: (
    url: string,
    applicationName: string,
    maxConnections: number
  ) => Layer.Layer<SqlClient.SqlClient, unknown>
  /** The key the Effect 4 runner knows the contender by (effect4/demo/run.ts). */
  readonly remote?: string
}

/**
 * `@effect/sql-pg` 0.53 with its defaults: `PgClient.layer`.
 *
 * @since 0.1.0
 * @category contenders
 */
export const sqlPg: Contender = {
  id: "sqlpg",
  label: "@effect/sql-pg 0.53",
  layer: (url, applicationName, maxConnections) =>
    PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections })
}

/**
 * pg-warden with its defaults: `WardenClient.layer`.
 *
 * @since 0.1.0
 * @category contenders
 */
export const warden: Contender = {
  id: "warden",
  label: "pg-warden (Effect 3)",
  layer: (url, applicationName, maxConnections) =>
    WardenClient.layer({ url: Redacted.make(url), applicationName, maxConnections })
}

/**
 * What a scenario needs besides the client.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScenarioContext {
  readonly observer: Observer
  /** The `application_name` of the contender's connections in this run. */
  readonly app: string
  readonly stats: RunStats
  readonly deadlines: Deadlines
  /** The fault proxy between the client and the server, when the scenario needs one. */
  readonly network?: Interruptions.Network | undefined
  /** Closes the client's Layer, for the scenarios that do it themselves. */
  readonly closeLayer?: (() => Promise<void>) | undefined
}

const now = () => performance.now()

/**
 * Interrupts `fiber` and waits at most `deadlineMs` for it to end, into `stats`. The sample keeps
 * being updated in the background if the fiber ends later, so a hang is reported with its real
 * length when known.
 *
 * @since 0.1.0
 * @category utils
 */
export const interruptMeasured = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  stats: RunStats,
  deadlineMs: number
): Effect.Effect<Sample> => Effect.orDie(interruptReported(fiber, reportTo(stats), deadlineMs))

/**
 * Runs `effect` on a daemon fiber that nobody interrupts and waits at most `deadlineMs` for it;
 * without a result by then it is a collateral failure (and the fiber is interrupted in the background).
 *
 * @since 0.1.0
 * @category utils
 */
export const probe = <A, E>(
  effect: Effect.Effect<A, E>,
  stats: RunStats,
  deadlineMs: number,
  what: string
): Effect.Effect<void> => Effect.orDie(probeReported(effect, reportTo(stats), deadlineMs, what))

/** The observer's reads as promises: the bodies read the server through pg-warden's promise-based `Observer`. */
const serverReads = (observer: Observer): Interruptions.ServerReads => {
  const promise = <A>(effect: Effect.Effect<A, CliError>) =>
    Effect.runPromise(Effect.either(effect)).then((result) =>
      Either.isRight(result) ? result.right : Promise.reject(result.left)
    )
  return {
    backends: (app) => promise(observer.backends(app)),
    waitForBackends: (app, predicate, timeoutMs) => promise(observer.waitFor(app, predicate, timeoutMs)),
    query: (text, values) => promise(observer.query(text, values))
  }
}

/**
 * Runs a scenario's body on `sql` with `ctx`, its reports accumulated into `ctx.stats` (or given to
 * `reporter`).
 *
 * @since 0.1.0
 * @category runners
 */
export const runBody = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  body: (run: Run) => Effect.Effect<void, ScenarioFailure>,
  reporter: Interruptions.Reporter = reportTo(ctx.stats)
): Effect.Effect<void, CliError> =>
  body({
    sql,
    server: serverReads(ctx.observer),
    app: ctx.app,
    deadlines: ctx.deadlines,
    reporter,
    network: ctx.network,
    closeLayer: ctx.closeLayer
  }).pipe(Effect.mapError((error) => new CliError({ kind: "server", message: error.message })))

/**
 * Runs a scenario (as data) with its Effect 3 body.
 *
 * @since 0.1.0
 * @category runners
 */
export const runSpec = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  spec: ScenarioSpec
): Effect.Effect<void, CliError> => {
  const reporter = reporterFor(spec, ctx.stats)
  switch (spec.kind) {
    case "repro":
      return runBody(sql, ctx, (run) => repro(run, spec.scenario, spec.budgetMs), reporter)
    case "storm":
      return runBody(sql, ctx, (run) => storm(run, spec.scenario), reporter)
    case "saturation":
      return runBody(sql, ctx, (run) => saturation(run, spec.scenario), reporter)
    case "blackhole":
      return runBody(sql, ctx, (run) => blackhole(run, spec.scenario), reporter)
    case "daemonClose":
      return runBody(sql, ctx, (run) => daemonClose(run, spec.scenario), reporter)
  }
}

/**
 * The outcome of one contender on one scenario.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunResult {
  readonly contender: Contender
  readonly scenario: Scenario
  readonly app: string
  readonly stats: RunStats
  /** How long closing the layer took; `undefined` when it did not finish within the deadline. */
  readonly closeMs: number | undefined
  /** What the server still showed for the run's `application_name` after the layer was closed. */
  readonly left: StateCounts
  /** Backends the demo terminated afterwards (so the next run starts clean). */
  readonly terminated: number
  readonly wallMs: number
}

/**
 * A fresh `application_name` for a run.
 *
 * @since 0.1.0
 * @category utils
 */
export const runApplicationName = (prefix: string, contender: Contender, scenario: { readonly id: string }) =>
  `${prefix}-${contender.id}-${scenario.id}-${randomBytes(3).toString("hex")}`.slice(0, 63)

/** How long closing a layer may take before it is reported as hung. */
const CLOSE_DEADLINE_MS = 3_000

/** The repository's Effect 4 tree, when this command line runs from the repository (not when installed). */
const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const effect4Node = path.join(repositoryRoot, "effect4", "node_modules", ".bin", "node")
const effect4Runner = path.join(repositoryRoot, "effect4", "demo", "run.ts")
const tsxLoader = path.join(repositoryRoot, "node_modules", "tsx", "dist", "loader.mjs")

/**
 * Whether the Effect 4 contenders can run: only in the repository, with effect4/ installed (its
 * Node 22 binary and effect 4 tree); an installed `pg-warden-cli` has neither.
 *
 * @since 0.1.0
 * @category contenders
 */
export const effect4Available = (): boolean =>
  existsSync(effect4Node) && existsSync(effect4Runner) && existsSync(tsxLoader)

/**
 * `@effect/sql-pg` 4.0 on effect 4.1 (`PgClient.layer`, library defaults), run by effect4/demo/run.ts.
 *
 * @since 0.1.0
 * @category contenders
 */
export const sqlPg4: Contender = { id: "sqlpg4", label: "@effect/sql-pg 4", remote: "sqlpg4" }

/**
 * pg-warden's Effect 4 edition (`WardenClient.layer`, defaults), run by effect4/demo/run.ts.
 *
 * @since 0.1.0
 * @category contenders
 */
export const warden4: Contender = { id: "warden4", label: "pg-warden (Effect 4)", remote: "warden4" }

/** The proxy as the bodies see it. */
const networkOf = (proxy: FaultProxy): Interruptions.Network => ({
  blackhole: () => proxy.setMode("blackhole"),
  pass: () => proxy.setMode("pass"),
  reset: () => proxy.reset()
})

/** Builds the layer in `scope` within 15 s and runs the scenario's body within its limit; problems become notes. */
const runLocal = (
  contender: Contender,
  scenario: Scenario,
  url: string,
  ctx: ScenarioContext,
  scope: Scope.CloseableScope
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const built = yield* Effect.forkDaemon(
      Layer.buildWithScope(contender.layer!(url, ctx.app, scenario.connections), scope)
    )
    const env = yield* Fiber.await(built).pipe(Effect.timeoutOption(15_000))
    if (Option.isNone(env) || Exit.isFailure(env.value)) {
      ctx.stats.notes.push(
        Option.isNone(env)
          ? "the layer did not build within 15 s"
          : `the layer failed to build: ${describeExit(env.value)}`
      )
      return
    }
    const sql = Context.get(env.value.value, SqlClient.SqlClient)
    const body = yield* Effect.forkDaemon(runSpec(sql, ctx, scenario.spec))
    const exit = yield* Fiber.await(body).pipe(Effect.timeoutOption(scenario.limitMs))
    if (Option.isNone(exit)) {
      ctx.stats.notes.push(`the scenario did not finish within its ${Math.round(scenario.limitMs / 1000)} s limit`)
      yield* Fiber.interruptFork(body)
    } else if (Exit.isFailure(exit.value)) {
      ctx.stats.notes.push(`the scenario stopped: ${describeExit(exit.value)}`)
    }
  })

/**
 * Runs the scenario in the Effect 4 runner's process (effect4/demo/run.ts on effect4's Node 22),
 * copying its stats into `ctx.stats` as they arrive. Resolves with how long closing its Layer took
 * (`undefined`: not within the deadline, or the process did not say). The process is killed at the
 * scenario's limit plus the close deadline and a margin.
 */
const runRemote = (
  contender: Contender,
  scenario: Scenario,
  url: string,
  ctx: ScenarioContext
): Effect.Effect<number | undefined> =>
  Effect.async<number | undefined>((resume) => {
    const job: RemoteJob = {
      contender: contender.remote!,
      url,
      app: ctx.app,
      connections: scenario.connections,
      limitMs: scenario.limitMs,
      deadlines: ctx.deadlines,
      spec: scenario.spec,
      closeDeadlineMs: CLOSE_DEADLINE_MS
    }
    const child = spawn(effect4Node, ["--import", tsxLoader, effect4Runner, JSON.stringify(job)], {
      cwd: repositoryRoot,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let closeMs: number | undefined
    let buffer = ""
    let stderr = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      buffer += chunk
      let newline = buffer.indexOf("\n")
      while (newline >= 0) {
        const line = buffer.slice(0, newline)
        buffer = buffer.slice(newline + 1)
        newline = buffer.indexOf("\n")
        if (line.trim() === "") continue
        try {
          const message = JSON.parse(line) as RemoteLine
          applyStats(ctx.stats, message.stats)
          if (message._tag === "Done") closeMs = message.closeMs ?? undefined
        } catch {
          // not one of ours
        }
      }
    })
    child.stderr.setEncoding("utf8")
    child.stderr.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-2_000)
    })
    const killer = setTimeout(() => child.kill("SIGKILL"), scenario.limitMs + CLOSE_DEADLINE_MS + 20_000)
    child.on("error", (error) => ctx.stats.notes.push(`the Effect 4 runner did not start: ${error.message}`))
    child.on("close", (code) => {
      clearTimeout(killer)
      if (code !== 0) {
        const last = stderr.trim().split("\n").slice(-1)[0] ?? ""
        ctx.stats.notes.push(`the Effect 4 runner exited with ${code ?? "a signal"}${last ? `: ${last}` : ""}`)
      }
      resume(Effect.succeed(closeMs))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/**
 * Runs one scenario against one contender: builds the layer in its own scope (in this process, or
 * in the Effect 4 runner's), runs the scenario on a daemon fiber within its time limit, closes the
 * layer within a deadline, reads what the server still shows, and terminates any leftovers so the
 * next run starts clean. Never waits without a deadline. A scenario that needs a network fault gets
 * a fault proxy between the client and the server, closed (every socket cut) after the run.
 *
 * @since 0.1.0
 * @category runners
 */
export const runScenario = (options: {
  readonly url: string
  readonly contender: Contender
  readonly scenario: Scenario
  readonly observer: Observer
  readonly app: string
  readonly stats: RunStats
  readonly deadlines: Deadlines
}): Effect.Effect<RunResult, CliError> => {
  const { contender, scenario, observer, app, stats } = options
  const started = now()
  return Effect.gen(function* () {
    // A run in the Effect 4 runner's process starts its own proxy, since its body switches it.
    const proxy =
      needsProxy(scenario.spec) && contender.remote === undefined
        ? yield* Effect.tryPromise({
            try: () => startProxy(proxyTarget(options.url)),
            catch: (error) => new CliError({ kind: "server", message: `starting the fault proxy: ${String(error)}` })
          })
        : undefined
    const url = proxy !== undefined ? proxy.rewrite(options.url) : options.url
    let closeMs: number | undefined
    if (contender.remote !== undefined) {
      closeMs = yield* runRemote(contender, scenario, options.url, {
        observer,
        app,
        stats,
        deadlines: options.deadlines
      })
    } else {
      const scope = yield* Scope.make()
      const closeLayer = () => Effect.runPromise(Scope.close(scope, Exit.void))
      const ctx: ScenarioContext = {
        observer,
        app,
        stats,
        deadlines: options.deadlines,
        network: proxy !== undefined ? networkOf(proxy) : undefined,
        closeLayer
      }
      yield* runLocal(contender, scenario, url, ctx, scope)
      const closeStarted = now()
      const closer = yield* Effect.forkDaemon(Scope.close(scope, Exit.void))
      const closed = yield* Fiber.await(closer).pipe(Effect.timeoutOption(CLOSE_DEADLINE_MS))
      closeMs = Option.isSome(closed) ? now() - closeStarted : undefined
    }
    if (proxy !== undefined) yield* Effect.promise(() => proxy.close())
    const after = yield* observer.waitFor(app, (bs) => bs.length === 0, 1_000)
    const left = countStates(after.backends)
    const terminated = left.total > 0 ? yield* observer.terminateAll(app) : 0
    if (left.total > 0) yield* observer.waitFor(app, (bs) => bs.length === 0, 3_000)
    return { contender, scenario, app, stats, closeMs, left, terminated, wallMs: now() - started }
  }).pipe(
    // Whatever happened (even an interrupted demo), nothing of this run stays on the server.
    Effect.onExit((exit) =>
      Exit.isSuccess(exit) ? Effect.void : Effect.ignore(Effect.timeout(observer.terminateAll(app), 3_000))
    )
  )
}

/** Host and port of the server behind `url`, for a fault proxy in front of it. */
const proxyTarget = (url: string): { readonly host: string; readonly port: number } => {
  const parsed = new URL(url)
  return {
    host: parsed.hostname === "" ? "127.0.0.1" : parsed.hostname,
    port: parsed.port === "" ? 5432 : Number(parsed.port)
  }
}
