#!/usr/bin/env node
// Placeholder until the demonstration lands (issue: the main job). Prints how to use pg-warden.
console.log("pg-warden: a PostgreSQL connection never outlives its scope.")
console.log("The live demonstration is not built yet. Run the proof instead: npm test")
console.log("Use it: Layer.provide(WardenClient.layer({ url: Redacted.make(process.env.DATABASE_URL) }))")
