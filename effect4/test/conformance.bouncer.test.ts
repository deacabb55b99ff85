/**
 * The conformance suite (../test/conformance/cases.ts) against pg-warden's Effect 4 edition through a real PgBouncer
 * in transaction mode (../test/support/pgbouncer.ts, started by the shared global setup): every case must pass.
 */
import * as Redacted from "effect/Redacted"
import { describe, inject, it } from "vitest"
import { cases, runCase, testName } from "../../test/conformance/cases.js"
import * as WardenClient from "../src/WardenClient.js"
import { contender } from "./conformance/effect4.js"
import "./context.js"

const bouncerUrl = inject("bouncerUrl")
const through = { serverUrl: inject("databaseUrl"), adminUrl: inject("bouncerAdminUrl") }
const skipped = bouncerUrl === "" ? ` (skipped: ${inject("bouncerSkipped")})` : ""

const warden = contender("warden", (url, app, options) =>
  WardenClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: options.maxConnections,
    acquireTimeout: options.acquireTimeoutMs,
    pgbouncer: true
  })
)

describe.skipIf(bouncerUrl === "")(`conformance (Effect 4) through PgBouncer: pg-warden${skipped}`, () => {
  for (const testCase of cases) {
    it(testName(testCase), () => runCase(testCase, warden, bouncerUrl, "e4-pgb-", through), 60_000)
  }
})
