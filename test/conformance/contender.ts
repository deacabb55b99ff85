/**
 * What the conformance suite (cases.ts) asks of a contender, without Effect: the cases are written once, against
 * this interface, and each edition's suite supplies a small interpreter that runs them on its own Effect major
 * (test/conformance/effect3.ts for Effect 3, effect4/test/conformance/effect4.ts for Effect 4).
 *
 * A case describes what a fiber does as a `Program` (data: statements, transactions, reservations, waits), starts it
 * on the contender's `SqlClient`, interrupts it the way a timeout, a race or a closing scope would, and judges the
 * `Outcome` and, above all, what the server shows.
 */
import type {
  Deadlines,
  Reporter,
  ReproScenario,
  SaturationScenario,
  StormScenario
} from "../../cli/src/interruptions.js"
import type { Admin } from "../support/admin.js"

/** One step of a fiber's program. A program runs its steps in order; its value is its last step's. */
export type Step =
  /** `sql.unsafe(text)`, or `connection.execute(text)` inside `Reserve`. */
  | { readonly _tag: "Sql"; readonly text: string }
  /** `sql.withTransaction(body)`. */
  | { readonly _tag: "Transaction"; readonly body: Program }
  /** `Effect.scoped(sql.reserve)`: the body's statements run on the reserved connection. */
  | { readonly _tag: "Reserve"; readonly body: Program }
  /** Runs `f` (a case's signal: "the fiber got this far"). */
  | { readonly _tag: "Call"; readonly f: () => void }
  /** Waits for the promise `f` returns (a gate the case opens), interruptibly. */
  | { readonly _tag: "Await"; readonly f: () => Promise<unknown> }
  /** Never ends (`Effect.never`). */
  | { readonly _tag: "Never" }
  /** The body, its failure ignored (`Effect.catchAll(() => void)` / `Effect.catch`). */
  | { readonly _tag: "IgnoreFailure"; readonly body: Program }
  /** `Effect.timeout(body, ms)`: fails with the edition's timeout error when the body takes longer. */
  | { readonly _tag: "Timeout"; readonly ms: number; readonly body: Program }
  /** `Effect.race(body as "body", sleep(ms) as "timer")`. */
  | { readonly _tag: "RaceTimer"; readonly ms: number; readonly body: Program }

export type Program = ReadonlyArray<Step>

export const sql = (text: string): Step => ({ _tag: "Sql", text })
export const transaction = (...body: Program): Step => ({ _tag: "Transaction", body })
export const reserve = (...body: Program): Step => ({ _tag: "Reserve", body })
export const call = (f: () => void): Step => ({ _tag: "Call", f })
export const wait = (f: () => Promise<unknown>): Step => ({ _tag: "Await", f })
export const never: Step = { _tag: "Never" }
export const ignoreFailure = (...body: Program): Step => ({ _tag: "IgnoreFailure", body })
export const timeout = (ms: number, ...body: Program): Step => ({ _tag: "Timeout", ms, body })
export const raceTimer = (ms: number, ...body: Program): Step => ({ _tag: "RaceTimer", ms, body })

/** How a fiber ended. `Failure` is a typed failure without a defect. */
export type Outcome =
  | { readonly _tag: "Success"; readonly value: unknown }
  | { readonly _tag: "Failure"; readonly error: unknown; readonly description: string }
  | { readonly _tag: "Defect"; readonly description: string }
  | { readonly _tag: "Interrupted" }

/** A started fiber. */
export interface Handle {
  /** Interrupts the fiber without waiting for it (`Fiber.interruptFork`). */
  readonly interrupt: () => void
  /** Settles when the fiber has ended. */
  readonly outcome: Promise<Outcome>
}

/** A scope the case closes itself; the fibers started in it are interrupted by its close. */
export interface ChildScope {
  readonly close: () => Promise<void>
}

export interface StartOptions {
  /** A daemon fiber: it outlives whatever started it (`Effect.forkDaemon` / `Effect.forkDetach`). */
  readonly daemon?: boolean
  /** Started in this scope (`Effect.forkIn`), so that closing the scope interrupts it. */
  readonly scope?: ChildScope
}

/** The shared interruption scenarios (cli/src/interruptions.ts), run by the edition's own bodies. */
export type Scenario =
  | { readonly _tag: "Repro"; readonly scenario: ReproScenario }
  | { readonly _tag: "Saturation"; readonly scenario: SaturationScenario }
  | { readonly _tag: "Storm"; readonly scenario: StormScenario }

export interface ScenarioRun {
  readonly server: Admin
  readonly app: string
  readonly deadlines: Deadlines
  readonly reporter: Reporter
}

/** A contender's layer, built in a scope of its own. */
export interface Client {
  readonly start: (program: Program, options?: StartOptions) => Handle
  readonly scope: () => Promise<ChildScope>
  /** Runs a shared scenario; rejects with the message of what stopped it. */
  readonly scenario: (scenario: Scenario, run: ScenarioRun) => Promise<void>
  /** Closes the layer's scope (fibers started outside a child scope keep running, as forked fibers would). */
  readonly close: () => Promise<void>
}

export interface LayerOptions {
  readonly maxConnections: number
  /** How long a statement may wait for a pool slot. A contender without such an option may ignore it. */
  readonly acquireTimeoutMs?: number
  /** Connect here instead of the case's server (a fault proxy in front of it). */
  readonly url?: string
}

export interface Contender {
  /** Short, used in application names. */
  readonly name: string
  /** Builds the contender's layer, connecting to `url` as `app`. */
  readonly open: (url: string, app: string, options: LayerOptions) => Promise<Client>
}

/** `_tag: message (cause: SQLSTATE message)` of an error, as far as it has them. */
export const describeError = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const e = error as { _tag?: unknown; message?: unknown; cause?: unknown }
  const head = `${typeof e._tag === "string" ? `${e._tag}: ` : ""}${String(e.message ?? "")}`
  const cause = e.cause as { code?: unknown; message?: unknown } | undefined
  const inner =
    typeof cause === "object" && cause !== null
      ? ` (cause: ${typeof cause.code === "string" ? `${cause.code} ` : ""}${String(cause.message ?? "")})`
      : ""
  return head + inner
}

export const describeOutcome = (outcome: Outcome): string => {
  switch (outcome._tag) {
    case "Success":
      return "success"
    case "Failure":
      return `failure ${outcome.description}`
    case "Defect":
      return `defect ${outcome.description}`
    case "Interrupted":
      return "interrupted"
  }
}
