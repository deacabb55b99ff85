/**
 * One interrupted statement, judged by the server: a `pg_sleep(10)` is started, interrupted once the server shows it
 * running, and must have stopped on the server within `stoppedWithinMs`.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as SqlClient from "effect/sql/SqlClient"
import { type Observer, runs } from "../../../src/core/observer.js"

export const interruptRunningSleep = (
  sql: SqlClient.SqlClient,
  observer: Observer,
  app: string,
  stoppedWithinMs: number
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(sql`select pg_sleep(10)`)
    yield* Effect.promise(() =>
      observer.waitFor(
        () => observer.backends(app),
        (bs) => bs.some(runs("pg_sleep")),
        { timeoutMs: 5_000 }
      )
    )
    yield* Fiber.interrupt(fiber)
    yield* Effect.promise(() =>
      observer.waitFor(
        () => observer.backends(app),
        (bs) => !bs.some(runs("pg_sleep")),
        {
          timeoutMs: stoppedWithinMs
        }
      )
    )
  })
