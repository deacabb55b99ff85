/**
 * Shared helpers for the test files that run pg-warden against a real server: configurations with
 * short cleanup deadlines, a Layer built in its own scope, typed-error assertions and polling.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { expect } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as WardenClient from "../../src/WardenClient.js"
import * as WardenPool from "../../src/WardenPool.js"
import { Admin, type Backend, type WaitForOptions } from "./admin.js"
import { type PrivateServer, startPrivateServer } from "./embedded.js"

/** Short cleanup deadlines, so that fault tests run quickly. */
export const deadlines = {
  cancelTimeout: 300,
  drainTimeout: 300,
  rollbackTimeout: 300,
  terminateTimeout: 300
} as const

/** Slack added to `cleanupBound` for scheduling and the server's own work. */
export const MARGIN_MS = 1_500

/** A config for `url` under `applicationName` with the short `deadlines`; `extra` overrides. */
export const configFor = (
  url: string,
  applicationName: string,
  extra: Partial<WardenClient.WardenClientConfig> = {}
): WardenClient.WardenClientConfig => ({
  url: Redacted.make(url),
  applicationName,
  ...deadlines,
  ...extra
})

/** The most an interruption or a close may take with `config`: its `cleanupBound` plus `MARGIN_MS`. */
export const boundMs = (config: WardenClient.WardenClientConfig): number =>
  Duration.toMillis(WardenClient.cleanupBound(config)) + MARGIN_MS

/** Host and port of the server behind `url`, for a fault proxy in front of it. */
export const proxyTarget = (url: string): { readonly host: string; readonly port: number } => {
  const parsed = new URL(url)
  return {
    host: parsed.hostname === "" ? "127.0.0.1" : parsed.hostname,
    port: parsed.port === "" ? 5432 : Number(parsed.port)
  }
}

/** What `open` returns: the Layer's services and a way to close it early. */
export interface Opened {
  readonly sql: SqlClient.SqlClient
  readonly pool: WardenPool.WardenPool
  /** Closes the Layer's scope (idempotent). */
  readonly close: Effect.Effect<void>
}

/** Builds the Layer in its own scope, closed at the latest when the test's scope closes. */
export const open = (config: WardenClient.WardenClientConfig): Effect.Effect<Opened, SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(WardenClient.layer(config), scope)
    return {
      sql: Context.get(context, SqlClient.SqlClient),
      pool: Context.get(context, WardenPool.WardenPool),
      close: Scope.close(scope, Exit.void)
    }
  })

/** `Effect.promise`: a rejection is a defect. */
export const promise = <A>(f: () => Promise<A>): Effect.Effect<A> => Effect.promise(f)

/** An `Admin` on `url` for the rest of the scope (closed when it closes). */
export const scopedAdmin = (url: string): Effect.Effect<Admin, never, Scope.Scope> =>
  Effect.acquireRelease(
    promise(() => Admin.connect(url)),
    (admin) => promise(() => admin.close())
  )

/** A private embedded server for the rest of the scope (disposed when it closes). */
export const scopedPrivateServer: Effect.Effect<PrivateServer, never, Scope.Scope> = Effect.acquireRelease(
  promise(() => startPrivateServer()),
  (server) => promise(() => server.dispose())
)

/** `JSON.stringify` for messages, falling back to `String` for what it cannot encode. */
export const safeJson = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** The failure of an exit, asserting it is a typed `SqlError` (not a defect, not an interruption). */
export const expectSqlError = <A>(exit: Exit.Exit<A, unknown>): SqlError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success: ${safeJson(exit.value)}`)
  expect(Cause.isDie(exit.cause), `defect instead of a typed error: ${Cause.pretty(exit.cause)}`).toBe(false)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got: ${Cause.pretty(exit.cause)}`)
  expect(failure.value).toBeInstanceOf(SqlError)
  return failure.value as SqlError
}

/** The server PID of the session that runs a statement on `sql`. */
export const backendPid = (sql: SqlClient.SqlClient) =>
  Effect.map(sql<{ pid: number }>`select pg_backend_pid() as pid`, (rows) => rows[0]!.pid)

/** Polls an effect until `predicate` holds; dies with `message` and the last value otherwise. */
export const eventually = <A, E>(
  probe: Effect.Effect<A, E>,
  predicate: (value: A) => boolean,
  message: string,
  timeoutMs = 10_000
): Effect.Effect<A> =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    let last: unknown
    for (;;) {
      const result = yield* Effect.either(probe)
      if (result._tag === "Right") {
        last = result.right
        if (predicate(result.right)) return result.right
      } else {
        last = result.left
      }
      if (Date.now() >= deadline) {
        return yield* Effect.dieMessage(`timed out after ${timeoutMs} ms: ${message} (last: ${safeJson(last)})`)
      }
      yield* Effect.sleep(Duration.millis(25))
    }
  })

/** Polls the server's backends for `app` (`Admin.waitFor`) until `predicate` holds; returns them. */
export const waitForBackends = (
  admin: Admin,
  app: string,
  predicate: (backends: Array<Backend>) => boolean,
  options?: WaitForOptions
): Effect.Effect<Array<Backend>> => promise(() => admin.waitFor(() => admin.backends(app), predicate, options))

/** Waits until backend `pid` is no longer among `app`'s backends on the server. */
export const backendGone = (admin: Admin, app: string, pid: number, message?: string): Effect.Effect<Array<Backend>> =>
  waitForBackends(admin, app, (bs) => bs.every((b) => b.pid !== pid), message === undefined ? undefined : { message })

/** True for a backend that is running a `pg_sleep` statement. */
export const isRunningSleep = (backend: Backend): boolean =>
  backend.state === "active" && backend.query.includes("pg_sleep")

/** Waits until at least `count` backends of `app` run `pg_sleep`; returns those. */
export const runningSleep = (admin: Admin, app: string, count = 1): Effect.Effect<ReadonlyArray<Backend>> =>
  promise(() =>
    admin.waitFor(
      async () => (await admin.backends(app)).filter(isRunningSleep),
      (bs) => bs.length >= count,
      { message: `${count} backend(s) running pg_sleep for ${app}` }
    )
  )

/** SIGCONT, tolerating a process that already exited. */
export const thawQuietly = (admin: Admin, pid: number): void => {
  try {
    admin.thaw(pid)
  } catch {
    // already gone
  }
}

/** Acquires an `Admin` for the duration of `f` and always closes it. Connection failures are defects. */
export const withAdmin = <A, E, R>(url: string, f: (admin: Admin) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.promise(() => Admin.connect(url)),
    f,
    (admin) => Effect.promise(() => admin.close())
  )
