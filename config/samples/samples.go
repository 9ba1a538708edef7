// Package samples embeds the example resources of config/samples, one of
// each kind, so that the demo applies exactly what the docs show.
package samples

import "embed"

// Files holds the *.yaml samples.
//
//go:embed *.yaml
var Files embed.FS
