// Package clientconfig owns the client configuration file (talosconfig format): contexts with
// endpoints, nodes, the CA to trust and the client certificate to present.
package clientconfig

// Config is a talosconfig file.
type Config struct {
	Context  string              `yaml:"context"`
	Contexts map[string]*Context `yaml:"contexts"`
	// Extra keeps top-level keys nodepki does not use, so rewriting a file loses nothing.
	Extra map[string]any `yaml:",inline"`
}

// Context is one named cluster connection. CA, Crt and Key are the standard base64 encoding of
// PEM text, as Talos writes them.
type Context struct {
	Endpoints []string `yaml:"endpoints"`
	Nodes     []string `yaml:"nodes,omitempty"`
	CA        string   `yaml:"ca,omitempty"`
	Crt       string   `yaml:"crt,omitempty"`
	Key       string   `yaml:"key,omitempty"`
	// Extra keeps keys nodepki does not use (Talos's auth and cluster, for Omni), so rewriting
	// a file written by talosctl loses nothing.
	Extra map[string]any `yaml:",inline"`
}
