/**
 * The conformance suite's interpreter for Effect 4: runs the cases' programs (../../../test/conformance/contender.ts)
 * on an Effect 4 `SqlClient` (pg-warden's Effect 4 edition or `@effect/sql-pg` 4), each program in a fiber of its
 * own. The cases are written once for both editions (../../../test/conformance/cases.ts).
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
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
} from "../../../test/conformance/contender.js"
import * as Bodies from "../support/interruptions-effect4.js"

const interpret = (
  sql: SqlClient.SqlClient,
  program: Program,
  connection?: Connection
): Effect.Effect<unknown, unknown> =>
  Effect.suspend(() => {
    let effect: Effect.Effect<unknown, unknown> = Effect.void
    for (const step of program) effect = Effect.andThen(effect, run(sql, step, connection))
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
      return Effect.catch(interpret(sql, step.body, connection), () => Effect.void)
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
  const defect = exit.cause.reasons.find(Cause.isDieReason)
  if (defect !== undefined) return { _tag: "Defect", description: describeError(defect.defect) }
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined) return { _tag: "Failure", error: failure.error, description: describeError(failure.error) }
  return Cause.hasInterruptsOnly(exit.cause)
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
  readonly scope: Scope.Closeable
}

/** A conformance contender from an Effect 4 layer that provides `SqlClient`. */
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
          interrupt: () => {
            Effect.runFork(Fiber.interrupt(fiber))
          },
          outcome: Effect.runPromise(Effect.exit(Fiber.join(fiber))).then(outcomeOf)
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
        Effect.runPromise(Effect.exit(scenarioBody(scenario, { sql, ...runWith }))).then((exit) => {
          if (Exit.isFailure(exit)) {
            const failure = exit.cause.reasons.find(Cause.isFailReason)
            throw new Error(failure !== undefined ? failure.error.message : Cause.pretty(exit.cause))
          }
        }),
      close: () => {
        closing ??= Effect.runPromise(Scope.close(scope, Exit.void))
        return closing
      }
    }
  }
})
