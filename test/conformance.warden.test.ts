/**
 * The conformance suite (test/conformance/cases.ts) against pg-warden: every case must pass.
 */
import * as Redacted from "effect/Redacted"
import { describe, inject, it } from "vitest"
import * as WardenClient from "../src/WardenClient.js"
import { cases, runCase, testName } from "./conformance/cases.js"
import { contender } from "./conformance/effect3.js"
import "./support/context.js"

const url = inject("databaseUrl")

const warden = contender("warden", (url, app, options) =>
  WardenClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: options.maxConnections,
    acquireTimeout: options.acquireTimeoutMs
  })
)

describe("conformance: pg-warden", () => {
  for (const testCase of cases) {
    it(testName(testCase), () => runCase(testCase, warden, url), 60_000)
  }
})
