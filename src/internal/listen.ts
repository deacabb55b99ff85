/**
 * `sql.listen` of the Effect 3 edition: a stream over the core's shared LISTEN session
 * (`src/core/listen.ts`), ended (and the channel unlistened when nobody else wants it) when the
 * stream's scope closes.
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { CoreError } from "../core/errors.js"
import type { ListenHub } from "../core/listen.js"
import { statementError, toSqlError } from "./effect.js"

export const listen = (hub: ListenHub, channel: string): Stream.Stream<string, SqlError> =>
  Stream.asyncPush<string, SqlError>((emit) =>
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          hub.subscribe(
            channel,
            (notification) => emit.single(notification.payload),
            (error) => emit.fail(toSqlError(error))
          ),
        catch: (error) => (error instanceof CoreError ? toSqlError(error) : statementError(error))
      }),
      (unsubscribe) => Effect.promise(unsubscribe)
    )
  )
