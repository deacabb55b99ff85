/** The fault-injecting TCP proxy lives with the demo that also uses it (cli/src/proxy.ts). */
export { type FaultProxy, type ProxyMode, type ProxyModeOptions, startProxy } from "../../cli/src/proxy.js"
