package main

import "runtime/debug"

// releaseStartupMemory runs a garbage collection and returns the freed
// pages to the operating system. Start-up leaves a few megabytes of
// garbage (migrations, the TLS certificate, the adapters' set-up) that the
// runtime would otherwise keep resident until its background scavenger
// got to them, minutes later or never on an idle hub.
func releaseStartupMemory() { debug.FreeOSMemory() }
