// Package version owns the version string of the nodepki binaries, set at link time.
package version

// Version is overridden at build time with
// -ldflags "-X github.com/nodepki/nodepki/pkg/version.Version=v1.2.3".
var Version = "dev"
