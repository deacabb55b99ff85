/**
 * What the repository's `test/support/globalSetup.ts` provides, declared for this folder's vitest
 * (the root's declaration augments the root's own vitest).
 */
declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    serverKind: "embedded" | "external"
    /** PgBouncer (transaction mode) in front of the test server; "" when there is none (see `bouncerSkipped`). */
    bouncerUrl: string
    bouncerAdminUrl: string
    bouncerSkipped: string
  }
}

export {}
