/**
 * BASELINE: the conformance suite (test/conformance/cases.ts) against `@effect/sql-pg` 0.53, the layer pg-warden
 * replaces. This file shows the baseline's failures: every case listed in `EXPECTED_FAILURES` is run with
 * `it.live.fails`, so the file stays green while recording what pg-warden fixes (each of those cases passes in
 * test/conformance.warden.test.ts). The set was determined by running the cases, not by reading the code; the
 * reasons are what the runs showed. If a listed case starts passing, `it.fails` turns red: update the map.
 */

import * as PgClient from "@effect/sql-pg/PgClient"
import * as Redacted from "effect/Redacted"
import { describe, inject, it } from "vitest"
import { cases, runCase, testName } from "./conformance/cases.js"
import { contender } from "./conformance/effect3.js"
import "./support/context.js"

const url = inject("databaseUrl")

const sqlPg = contender("sqlpg", (url, app, options) =>
  PgClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: options.maxConnections,
    // sql-pg has no acquire-timeout option of its own, but its `connectTimeout` becomes pg-pool's
    // `connectionTimeoutMillis`, which also bounds the wait for a pool slot (it then fails with a typed
    // SqlError "Failed to acquire connection"). That is the fairest equivalent, so the baseline gets it.
    ...(options.acquireTimeoutMs !== undefined ? { connectTimeout: options.acquireTimeoutMs } : {})
  })
)

/** Case id → what `@effect/sql-pg` 0.53 was observed to do. */
const EXPECTED_FAILURES: Readonly<Record<string, string>> = {
  "asyncpg-repro":
    "interrupting the pool-of-1 transaction takes > 3 s: the pg_cancel_backend it sends needs a slot of the full pool",
  "interrupted-waiter":
    "a waiter interrupted in sql.reserve loses the pool slot for good: the next statement never gets a connection",
  "during-commit": "COMMIT runs uninterruptibly: interrupting it waits for the whole 5 s COMMIT",
  "shutdown-daemon": "a daemon fiber's transaction commits (2 rows) after the layer's scope has closed",
  saturation: "with the pool of 4 saturated, no cancel can be sent: all pg_sleep(30) keep running on the server",
  "failed-commit": "a COMMIT rejected by a deferred constraint (23505) is a defect (orDie), not a typed SqlError",
  "commit-rolled-back": "withTransaction succeeds although the server answered COMMIT with ROLLBACK",
  "raw-begin-reserve":
    "the reserved connection goes back to the pool still idle in transaction (the raw BEGIN is never rolled back)",
  "blackhole-transaction":
    "under a network blackhole, interrupting the idle transaction does not end within 6 s (the ROLLBACK waits for an answer)",
  "frozen-backend": "with the backend frozen (SIGSTOP), interrupting the transaction does not end within 6 s"
}

/**
 * Case id → why it is not run against the baseline: it fails only in some runs, so neither `it` nor `it.fails`
 * would stay green. What it shows when it fails is said here.
 */
const NOT_RUN: Readonly<Record<string, string>> = {
  "interruption-storm":
    "fails in most runs only: interrupted fibers wait up to 5 s for their cancel, and uninterrupted ones fail with " +
    "57014 when a late cancel hits them (collateral cancels); a run where no cancel arrives late passes",
  "shared-storm":
    "fails in some runs only: a transaction started right after an interruption fails with 57014 when the late cancel " +
    "of the interrupted one hits it"
}

describe("conformance: @effect/sql-pg 0.53 (baseline)", () => {
  for (const testCase of cases) {
    const test = testCase.id in NOT_RUN ? it.skip : testCase.id in EXPECTED_FAILURES ? it.fails : it
    test(testName(testCase), () => runCase(testCase, sqlPg, url), 60_000)
  }
})
