/**
 * What the repository's `test/support/globalSetup.ts` provides, declared for this folder's vitest
 * (the root's declaration augments the root's own vitest).
 */
declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    serverKind: "embedded" | "external"
  }
}

export {}
