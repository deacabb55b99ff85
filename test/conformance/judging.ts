/**
 * The conformance suite's limits for the shared interruption scenarios (cli/src/interruptions.ts),
 * Effect-free so that each edition's suite (test/conformance for Effect 3, effect4/test/conformance
 * for Effect 4) judges the scenario reports the same way. The demo and `pg-warden check` have limits
 * of their own: they report, they never stop.
 */
import { type Deadlines, type Reporter, ScenarioStop } from "../../cli/src/interruptions.js"

/** Interruptions end within 3 s, statements nobody interrupted answer within 1 s, the server is read at once. */
export const STRICT: Deadlines = { interruptMs: 3_000, probeMs: 1_000, settleMs: 0 }

/** A reporter hook's assertion: stops the scenario with `message` unless `condition` holds. */
export const need = (condition: boolean, message: string): void => {
  if (!condition) throw new ScenarioStop(message)
}

/** Every interrupted fiber ends within `STRICT.interruptMs`, none ends before it is interrupted, every probe succeeds. */
export const interruptionLimits = (where: () => string): Pick<Reporter, "endedBefore" | "interrupted" | "probe"> => ({
  endedBefore: (ending) => need(false, `${where()}a fiber ended before it was interrupted: ${ending.description}`),
  interrupted: (interruption) => {
    need(!interruption.hung, `${where()}interruption: not done within ${STRICT.interruptMs} ms`)
    need(interruption.ms < STRICT.interruptMs, `${where()}interruption took ${Math.round(interruption.ms)} ms`)
  },
  probe: (report) =>
    need(
      report.ending?._tag === "Success",
      `${where()}${report.what} after the interruption: ${report.ending?.description ?? `no result within ${report.deadlineMs} ms`}`
    )
})
