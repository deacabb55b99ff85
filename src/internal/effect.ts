/**
 * The Effect 3 edition's door to the core: the core's callbacks and promises as Effects, and its
 * plain errors as the `SqlError`s `@effect/sql` users handle. Nothing here decides anything about a
 * session; it only translates.
 *
 * @internal
 */
import { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { CoreError, type Holder, sqlState } from "../core/errors.js"
import type { Member, Pool } from "../core/pool.js"
import type { Session, StatementConfig } from "../core/session.js"
import type { StackSite } from "../core/stack.js"
import { sqlError } from "../WardenError.js"

/** Builds the `SqlError` a failed statement surfaces, keeping the driver error as the cause. */
export const statementError = (cause: unknown, what = "Failed to execute statement"): SqlError => {
  const code = sqlState(cause)
  const detail = cause instanceof Error ? cause.message : String(cause)
  return new SqlError({ cause, message: code ? `${what}: ${detail} (SQLSTATE ${code})` : `${what}: ${detail}` })
}

/** A core failure as the `SqlError` of the `SqlClient` boundary. */
export const toSqlError = (error: CoreError): SqlError => {
  switch (error.reason) {
    case "Statement":
      return statementError(error.cause, error.detail)
    case "Refused":
      return new SqlError({ message: error.detail, ...(error.cause !== undefined ? { cause: error.cause } : {}) })
    default:
      return sqlError(error.reason, error.detail, {
        ...(error.cause !== undefined ? { cause: error.cause } : {}),
        ...(error.snapshot !== undefined ? { snapshot: error.snapshot } : {})
      })
  }
}

/** What a session's statement callback reports, as an `SqlError`. */
const failureOf = (error: unknown): SqlError => (error instanceof CoreError ? toSqlError(error) : statementError(error))

/**
 * Runs one statement on a session the caller holds. Interrupting it cancels the statement on the
 * server and waits for it to settle within the deadlines; when that cannot be confirmed, the
 * session is terminated.
 */
export const run = <A>(session: Session, config: StatementConfig, onResult: (result: any) => A) =>
  Effect.async<A, SqlError>((resume) => {
    const record = session.submit(config, (error, result) => {
      if (error) {
        resume(Effect.fail(failureOf(error)))
        return
      }
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
 * the wait is made interruptible, through `restore`. One interruption handler covers both moments:
 * while waiting (the waiter leaves the queue) and after being served but before the fiber resumed
 * (the session goes back).
 */
export const acquire = <S extends Member>(
  pool: Pool<S>,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
  kind: Holder["kind"] = "reserve",
  stack?: StackSite
): Effect.Effect<S, SqlError> =>
  Effect.withFiberRuntime((fiber) => {
    if (pool.closed) return Effect.fail(toSqlError(pool.closedError()))
    const holder = holderOf(fiber, kind, stack)
    const session = pool.takeIdle(holder)
    if (session !== undefined) return Effect.succeed(session)
    const waiter = pool.enqueue(holder)
    return restore(
      Effect.async<S, SqlError>((resume) => {
        if (waiter.state === "served") return resume(Effect.succeed(waiter.session!))
        if (waiter.failure !== undefined) return resume(Effect.fail(toSqlError(waiter.failure)))
        waiter.serve = (session) => resume(Effect.succeed(session))
        waiter.fail = (error) => resume(Effect.fail(toSqlError(error)))
      })
    ).pipe(Effect.onInterrupt(() => Effect.sync(() => pool.abandon(waiter))))
  })

/**
 * Who takes a connection: the fiber (as Effect names it), the span it is in, and the stack where
 * it asked for the connection (captured by the caller, with leak detection on).
 */
export const holderOf = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  kind: Holder["kind"],
  stack: StackSite | undefined
): Holder => {
  const span = Option.getOrUndefined(Context.getOption(fiber.currentContext, Tracer.ParentSpan))
  // Under a recording tracer the transaction's own `sql.transaction` span is current: name the user's.
  const named =
    span?._tag === "Span" && span.name === "sql.transaction" && Option.isSome(span.parent) ? span.parent.value : span
  return {
    kind,
    fiber: `#${fiber.id().id}`,
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

/**
 * One statement on a pooled session, as a single async step. Interruption is the statement's own:
 * a waiter leaves, a running statement is cancelled and its session released before the
 * interruption completes.
 */
export const pooledStatement = <A>(
  pool: Pool,
  config: StatementConfig,
  onResult: (result: any) => A
): Effect.Effect<A, SqlError> =>
  Effect.async<A, SqlError>((resume) => {
    const op = pool.statement(config, onResult, (error, value) =>
      resume(error === undefined ? Effect.succeed(value as A) : Effect.fail(toSqlError(error)))
    )
    return Effect.suspend(() => {
      const cleanup = op.interrupt()
      return cleanup === undefined ? Effect.void : Effect.promise(() => cleanup)
    })
  })

/** A session outside the pool's count (LISTEN), connected interruptibly within the connect deadline. */
export const openDedicated = <S extends Member>(pool: Pool<S>): Effect.Effect<S, SqlError> =>
  Effect.async<S, SqlError>((resume) => {
    const abort = pool.openDedicated((error, session) =>
      resume(error === undefined ? Effect.succeed(session!) : Effect.fail(toSqlError(error)))
    )
    return Effect.sync(abort)
  })

export const closeDedicated = <S extends Member>(pool: Pool<S>, session: S): Effect.Effect<void> =>
  Effect.promise(() => pool.closeDedicated(session))
