/**
 * The conformance suite's interpreter for Effect 3: runs the cases' programs (contender.ts) on an Effect 3
 * `SqlClient` (pg-warden or `@effect/sql-pg` 0.53), each program in a fiber of its own.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Bodies from "../../cli/src/interruptions-effect3.js"
import {
  type ChildScope,
  type Client,
  type Contender,
  describeError,
  type LayerOptions,
  type Outcome,
  type Program,
  type Scenario,
  type Step
} from "./contender.js"

const interpret = (
  sql: SqlClient.SqlClient,
  program: Program,
  connection?: Connection
): Effect.Effect<unknown, unknown> =>
  Effect.suspend(() => {
    let effect: Effect.Effect<unknown, unknown> = Effect.void
    for (const step of program) effect = Effect.zipRight(effect, run(sql, step, connection))
    return effect
  })

const run = (
  sql: SqlClient.SqlClient,
  step: Step,
  connection: Connection | undefined
): Effect.Effect<unknown, unknown> => {
  switch (step._tag) {
    case "Sql":
      return connection !== undefined ? connection.execute(step.text, [], undefined) : sql.unsafe(step.text)
    case "Transaction":
      return sql.withTransaction(interpret(sql, step.body))
    case "Reserve":
      return Effect.scoped(Effect.flatMap(sql.reserve, (reserved) => interpret(sql, step.body, reserved)))
    case "Call":
      return Effect.sync(step.f)
    case "Await":
      return Effect.promise(step.f)
    case "Never":
      return Effect.never
    case "IgnoreFailure":
      return Effect.catchAll(interpret(sql, step.body, connection), () => Effect.void)
    case "Timeout":
      return Effect.timeout(interpret(sql, step.body, connection), Duration.millis(step.ms))
    case "RaceTimer":
      return Effect.race(
        Effect.as(interpret(sql, step.body, connection), "body"),
        Effect.as(Effect.sleep(Duration.millis(step.ms)), "timer")
      )
  }
}

export const outcomeOf = <A, E>(exit: Exit.Exit<A, E>): Outcome => {
  if (Exit.isSuccess(exit)) return { _tag: "Success", value: exit.value }
  const defect = Cause.dieOption(exit.cause)
  if (Option.isSome(defect)) return { _tag: "Defect", description: describeError(defect.value) }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure))
    return { _tag: "Failure", error: failure.value, description: describeError(failure.value) }
  return Cause.isInterruptedOnly(exit.cause)
    ? { _tag: "Interrupted" }
    : { _tag: "Defect", description: Cause.pretty(exit.cause).split("\n")[0] ?? "failed" }
}

const scenarioBody = (scenario: Scenario, run: Bodies.Run) => {
  switch (scenario._tag) {
    case "Repro":
      return Bodies.repro(run, scenario.scenario)
    case "Saturation":
      return Bodies.saturation(run, scenario.scenario)
    case "Storm":
      return Bodies.storm(run, scenario.scenario)
  }
}

interface EffectScope extends ChildScope {
  readonly scope: Scope.CloseableScope
}

/** A conformance contender from an Effect 3 layer that provides `SqlClient`. */
export const contender = (
  name: string,
  layer: (url: string, app: string, options: LayerOptions) => Layer.Layer<SqlClient.SqlClient, unknown>
): Contender => ({
  name,
  open: async (url, app, options): Promise<Client> => {
    const scope = Effect.runSync(Scope.make())
    const env = await Effect.runPromise(Layer.buildWithScope(layer(url, app, options), scope))
    const sql = Context.get(env, SqlClient.SqlClient)
    let closing: Promise<void> | undefined
    return {
      start: (program, startOptions) => {
        const effect = interpret(sql, program)
        // Every program runs in a root fiber, which outlives whatever started it (so `daemon` changes nothing
        // here), unless it is started in a child scope, whose close interrupts it.
        const fiber =
          startOptions?.scope !== undefined
            ? Effect.runSync(Effect.forkIn(effect, (startOptions.scope as EffectScope).scope))
            : Effect.runFork(effect)
        return {
          interrupt: () => Effect.runFork(Fiber.interruptFork(fiber)),
          outcome: Effect.runPromise(Fiber.await(fiber)).then(outcomeOf)
        }
      },
      scope: async () => {
        const child = Effect.runSync(Scope.make())
        const closed: EffectScope = {
          scope: child,
          close: () => Effect.runPromise(Scope.close(child, Exit.void))
        }
        return closed
      },
      scenario: (scenario, runWith) =>
        Effect.runPromise(Effect.either(scenarioBody(scenario, { sql, ...runWith }))).then((result) => {
          if (result._tag === "Left") throw new Error(result.left.message)
        }),
      close: () => {
        closing ??= Effect.runPromise(Scope.close(scope, Exit.void))
        return closing
      }
    }
  }
})
