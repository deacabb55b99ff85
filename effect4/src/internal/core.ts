/**
 * The Effect 4 edition's door to the core (`../../../src/core`): the core's callbacks and promises
 * as Effect 4 effects, and its plain errors as effect 4's `SqlError` with the reason classes
 * `@effect/sql-pg` 4 uses. Like the Effect 3 edition's `src/internal/effect.ts`, it decides nothing
 * about a session; it only translates.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import {
  AuthenticationError,
  AuthorizationError,
  ConnectionError,
  ConstraintError,
  DeadlockError,
  LockTimeoutError,
  SerializationError,
  SqlError,
  type SqlErrorReason,
  SqlSyntaxError,
  StatementTimeoutError,
  UniqueViolation,
  UnknownError
} from "effect/sql/SqlError"
import * as Tracer from "effect/Tracer"
import { CoreError, type Holder, sqlState } from "../../../src/core/errors.js"
import type { Member, Pool } from "../../../src/core/pool.js"
import type { Session, StatementConfig } from "../../../src/core/session.js"
import type { StackSite } from "../../../src/core/stack.js"

interface ReasonProps {
  readonly cause: unknown
  readonly message: string
  readonly operation: string
}

/**
 * The reason class for a SQLSTATE, as `@effect/sql-pg` 4 classifies it, with one deliberate
 * difference: 57014 is a `StatementTimeoutError` (retryable) only when the server says the
 * statement timed out. A statement cancelled at someone's request ("due to user request", which is
 * how an interrupted fiber's cancel ends) is not a timeout and retrying it is not safe by default.
 */
export const reasonFor = (code: string | undefined, props: ReasonProps): SqlErrorReason => {
  if (code === undefined) return new UnknownError(props)
  if (code.startsWith("08")) return new ConnectionError(props)
  if (code.startsWith("28")) return new AuthenticationError(props)
  if (code === "42501") return new AuthorizationError(props)
  if (code.startsWith("42")) return new SqlSyntaxError(props)
  if (code === "23505") {
    const constraint = (props.cause as { constraint?: unknown } | undefined)?.constraint
    return new UniqueViolation({
      ...props,
      constraint: typeof constraint === "string" && constraint.trim() !== "" ? constraint.trim() : "unknown"
    })
  }
  if (code.startsWith("23")) return new ConstraintError(props)
  if (code === "40P01") return new DeadlockError(props)
  if (code === "40001") return new SerializationError(props)
  if (code === "55P03") return new LockTimeoutError(props)
  if (code === "57014") {
    const text = props.cause instanceof Error ? props.cause.message : ""
    return /user request/i.test(text) ? new UnknownError(props) : new StatementTimeoutError(props)
  }
  return new UnknownError(props)
}

/** A failed statement as an `SqlError`, its reason by SQLSTATE, the driver's error as the reason's cause. */
export const statementError = (cause: unknown, what = "Failed to execute statement"): SqlError => {
  const code = sqlState(cause)
  const detail = cause instanceof Error ? cause.message : String(cause)
  const message = code ? `${what}: ${detail} (SQLSTATE ${code})` : `${what}: ${detail}`
  return new SqlError({ reason: reasonFor(code, { cause, message, operation: "execute" }) })
}

/**
 * A core failure as an `SqlError`. pg-warden's own failures (acquire timeout, pool closed, commit
 * rolled back, …) have no reason class of their own in effect 4's closed set: they get the nearest
 * one (`ConnectionError` for what a new attempt may fix, `UnknownError` otherwise), and the
 * `CoreError` itself, with its `reason`, is the reason's `cause`.
 */
export const toSqlError = (error: CoreError): SqlError => {
  switch (error.reason) {
    case "Statement":
      return statementError(error.cause, error.detail)
    case "ConnectFailed": {
      const code = sqlState(error.cause)
      const props = { cause: error, message: error.detail, operation: "connect" }
      return new SqlError({
        reason: code?.startsWith("28") ? new AuthenticationError(props) : reasonFor(code ?? "08000", props)
      })
    }
    case "ConnectTimeout":
    case "ConnectionLost":
    case "AcquireTimeout":
    case "PoolClosed":
    case "Refused":
      return new SqlError({
        reason: new ConnectionError({ cause: error, message: error.detail, operation: operationOf(error) })
      })
    case "CommitFailed": {
      const code = sqlState(error.cause)
      return new SqlError({ reason: reasonFor(code, { cause: error, message: error.detail, operation: "commit" }) })
    }
    default:
      return new SqlError({
        reason: new UnknownError({ cause: error, message: error.detail, operation: operationOf(error) })
      })
  }
}

const operationOf = (error: CoreError): string => {
  switch (error.reason) {
    case "AcquireTimeout":
    case "PoolClosed":
      return "acquire"
    case "ConnectTimeout":
      return "connect"
    case "CommitRolledBack":
      return "commit"
    case "InvalidConfig":
    case "UnsupportedDriver":
      return "configure"
    default:
      return "execute"
  }
}

const failureOf = (error: unknown): SqlError => (error instanceof CoreError ? toSqlError(error) : statementError(error))

/**
 * Runs one statement on a session the caller holds. Interrupting it cancels the statement on the
 * server and waits for it to settle within the deadlines; when that cannot be confirmed, the
 * session is terminated.
 */
export const run = <A>(session: Session, config: StatementConfig, onResult: (result: any) => A) =>
  Effect.callback<A, SqlError>((resume) => {
    const record = session.submit(config, (error, result) => {
      if (error) return resume(Effect.fail(failureOf(error)))
      try {
        resume(Effect.succeed(onResult(result)))
      } catch (cause) {
        resume(Effect.fail(statementError(cause, "Failed to read result")))
      }
    })
    return record.done ? undefined : Effect.promise(() => session.interrupt(record))
  })

/**
 * Takes a session for a scope (reserve, transaction). Must run in an uninterruptible region; only
 * the wait is made interruptible, through `restore`.
 */
export const acquire = <S extends Member>(
  pool: Pool<S>,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
  kind: Holder["kind"] = "reserve",
  stack?: StackSite
): Effect.Effect<S, SqlError> =>
  Effect.withFiber((fiber) => {
    if (pool.closed) return Effect.fail(toSqlError(pool.closedError()))
    const holder = holderOf(fiber, kind, stack ?? fiber.getRef(AcquiredAt))
    const session = pool.takeIdle(holder)
    if (session !== undefined) return Effect.succeed(session)
    const waiter = pool.enqueue(holder)
    return restore(
      Effect.callback<S, SqlError>((resume) => {
        if (waiter.state === "served") return resume(Effect.succeed(waiter.session!))
        if (waiter.failure !== undefined) return resume(Effect.fail(toSqlError(waiter.failure)))
        waiter.serve = (session) => resume(Effect.succeed(session))
        waiter.fail = (error) => resume(Effect.fail(toSqlError(error)))
      })
    ).pipe(Effect.onInterrupt(() => Effect.sync(() => pool.abandon(waiter))))
  })

/**
 * Where the current `withTransaction` or `reserve` was asked for (a stack), set around it by the
 * client while leak detection is on; `acquire` records it as the holder's.
 */
export const AcquiredAt = Context.Reference<StackSite | undefined>("pg-warden/AcquiredAt", {
  defaultValue: () => undefined
})

/**
 * Who takes a connection: the fiber (as Effect 4 numbers it), the span it is in (the user's, not the
 * transaction's own `sql.transaction`), and the stack where it asked for the connection (captured by
 * the caller, with leak detection on).
 */
export const holderOf = (
  fiber: { readonly id: number; readonly context: Context.Context<never> },
  kind: Holder["kind"],
  stack: StackSite | undefined
): Holder => {
  const span = Context.getOrUndefined(fiber.context, Tracer.ParentSpan)
  const named =
    span?._tag === "Span" && span.name === "sql.transaction" && span.parent !== undefined ? span.parent : span
  return {
    kind,
    fiber: `#${fiber.id}`,
    ...(named?._tag === "Span" ? { span: named.name } : {}),
    ...(stack !== undefined ? { site: stack } : {})
  }
}

/** Gives a session back (a finalizer: run it uninterruptibly); bounded by the pool's outer deadline. */
export const release = <S extends Member>(pool: Pool<S>, session: S): Effect.Effect<void> =>
  Effect.suspend(() => {
    const pending = pool.release(session)
    return pending === undefined ? Effect.void : Effect.promise(() => pending)
  })

/** One statement on a pooled session, as a single async step; interruption is the statement's own. */
export const pooledStatement = <A>(
  pool: Pool,
  config: StatementConfig,
  onResult: (result: any) => A
): Effect.Effect<A, SqlError> =>
  Effect.callback<A, SqlError>((resume) => {
    const op = pool.statement(config, onResult, (error, value) =>
      resume(error === undefined ? Effect.succeed(value as A) : Effect.fail(toSqlError(error)))
    )
    return Effect.suspend(() => {
      const cleanup = op.interrupt()
      return cleanup === undefined ? Effect.void : Effect.promise(() => cleanup)
    })
  })
