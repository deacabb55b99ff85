/**
 * The release protocol's one decision (`nextStep`), without a database: from what a session knows
 * about itself, which step comes next, and that only a session with nothing left to clean is kept.
 */
import { describe, expect, it } from "@effect/vitest"
import { nextStep, type ReleaseFacts } from "../src/core/session.js"

const clean: ReleaseFacts = {
  lost: false,
  cancelUnconfirmed: false,
  inFlight: false,
  settled: true,
  transaction: "I",
  stateDirty: false,
  keep: true
}

describe("nextStep", () => {
  it("keeps a clean session, and closes it when the pool does not want it back", () => {
    expect(nextStep(clean)).toBe("keep")
    expect(nextStep({ ...clean, keep: false })).toBe("close")
  })

  it("takes the steps in protocol order: cancel, drain, roll back, reset", () => {
    expect(nextStep({ ...clean, inFlight: true, settled: false, transaction: "T", stateDirty: true })).toBe("cancel")
    expect(nextStep({ ...clean, settled: false, transaction: "T", stateDirty: true })).toBe("drain")
    expect(nextStep({ ...clean, transaction: "T", stateDirty: true })).toBe("rollback")
    expect(nextStep({ ...clean, transaction: "E" })).toBe("rollback")
    expect(nextStep({ ...clean, stateDirty: true })).toBe("reset")
  })

  it("does not reset a session that is closed anyway", () => {
    expect(nextStep({ ...clean, stateDirty: true, keep: false })).toBe("close")
  })

  it("terminates what cannot be trusted: a lost socket, an unconfirmed cancel, an unknown status", () => {
    expect(nextStep({ ...clean, lost: true })).toBe("terminate")
    expect(nextStep({ ...clean, cancelUnconfirmed: true, inFlight: true })).toBe("terminate")
    expect(nextStep({ ...clean, transaction: null })).toBe("terminate")
  })

  it("keeps a session only when every fact is clean (all 2^6 × 4 combinations)", () => {
    const statuses = ["I", "T", "E", null] as const
    for (let bits = 0; bits < 64; bits++) {
      for (const transaction of statuses) {
        const facts: ReleaseFacts = {
          lost: (bits & 1) !== 0,
          cancelUnconfirmed: (bits & 2) !== 0,
          inFlight: (bits & 4) !== 0,
          settled: (bits & 8) !== 0,
          stateDirty: (bits & 16) !== 0,
          keep: (bits & 32) !== 0,
          transaction
        }
        const clean = !facts.lost && !facts.cancelUnconfirmed && !facts.inFlight && facts.settled && !facts.stateDirty
        const step = nextStep(facts)
        expect({ facts, kept: step === "keep" }).toEqual({ facts, kept: clean && transaction === "I" && facts.keep })
        if (step === "close") expect(clean || (facts.stateDirty && !facts.keep)).toBe(true)
      }
    }
  })
})
