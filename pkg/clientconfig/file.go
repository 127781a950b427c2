package clientconfig

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/atomicfile"
)

// EnvVar names the environment variable that points at the talosconfig file.
const EnvVar = "TALOSCONFIG"

// DefaultPath is where the client config lives when no path is given explicitly: $TALOSCONFIG
// if set, else ~/.talos/config, as talosctl resolves it. Commands resolve the path in the order
// explicit --talosconfig flag, then DefaultPath (see ResolvePath).
func DefaultPath() (string, error) {
	if path := os.Getenv(EnvVar); path != "" {
		return path, nil
	}

	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the talosconfig: set --talosconfig or $%s: %w", EnvVar, err)
	}

	return filepath.Join(home, ".talos", "config"), nil
}

// ResolvePath returns explicit if it is set, else DefaultPath().
func ResolvePath(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}

	return DefaultPath()
}

// New returns a config with a single context, which is current.
func New(contextName string, endpoints []string, caPEM, crtPEM, keyPEM []byte) *Config {
	return &Config{
		Context: contextName,
		Contexts: map[string]*Context{
			contextName: {
				Endpoints: slices.Clone(endpoints),
				CA:        base64.StdEncoding.EncodeToString(caPEM),
				Crt:       base64.StdEncoding.EncodeToString(crtPEM),
				Key:       base64.StdEncoding.EncodeToString(keyPEM),
			},
		},
	}
}

// Parse decodes a talosconfig. It is as lenient as talosctl: keys nodepki does not use are
// kept, not refused, and the legacy single "target" endpoint is moved into endpoints.
func Parse(data []byte) (*Config, error) {
	c := &Config{}

	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Load(data, c); err != nil {
			return nil, fmt.Errorf("talosconfig is not valid: %w", err)
		}
	}

	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}

	for name, ctx := range c.Contexts {
		if ctx == nil {
			c.Contexts[name] = &Context{}

			continue
		}

		if target, ok := ctx.Extra["target"].(string); ok {
			if target != "" && !slices.Contains(ctx.Endpoints, target) {
				ctx.Endpoints = append(ctx.Endpoints, target)
			}

			delete(ctx.Extra, "target")
		}
	}

	return c, nil
}

// Open reads the talosconfig at path. A missing file is an error that wraps fs.ErrNotExist, so
// a caller that creates the file (merge, gen) can start from an empty config.
func Open(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading talosconfig: %w", err)
	}

	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}

	return c, nil
}

// Bytes encodes the config as YAML with 4-space indent, as talosctl writes it.
func (c *Config) Bytes() ([]byte, error) {
	out, err := yaml.Dump(c, yaml.V3)
	if err != nil {
		return nil, fmt.Errorf("encoding talosconfig: %w", err)
	}

	return out, nil
}

// Save writes the config to path atomically with mode 0600, creating its directory with mode
// 0700 if needed: the file holds a client private key.
func (c *Config) Save(path string) error {
	data, err := c.Bytes()
	if err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the talosconfig directory: %w", err)
	}

	return atomicfile.WriteFile(path, data)
}

// Current returns the current context.
func (c *Config) Current() (*Context, error) {
	if c.Context == "" {
		return nil, fmt.Errorf("talosconfig has no current context: choose one of [%s] with `nodepkictl config context NAME`",
			strings.Join(c.ContextNames(), ", "))
	}

	return c.Lookup(c.Context)
}

// Lookup returns the named context.
func (c *Config) Lookup(name string) (*Context, error) {
	ctx, ok := c.Contexts[name]
	if !ok || ctx == nil {
		return nil, fmt.Errorf("context %q is not defined in talosconfig; defined contexts: [%s]",
			name, strings.Join(c.ContextNames(), ", "))
	}

	return ctx, nil
}

// ContextNames returns the names of all contexts, sorted.
func (c *Config) ContextNames() []string {
	return slices.Sorted(maps.Keys(c.Contexts))
}

// Rename records a context renamed by Merge because its name was taken.
type Rename struct {
	From string
	To   string
}

func (r Rename) String() string {
	return fmt.Sprintf("%q -> %q", r.From, r.To)
}

// Merge adds the contexts of other. A context whose name is taken is added as name-1 (or
// name-2, ...) as talosctl does; the renames are returned. other's current context, if set,
// becomes the current one.
func (c *Config) Merge(other *Config) []Rename {
	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}

	mapped := map[string]string{}

	var renames []Rename

	for _, name := range other.ContextNames() {
		merged := name

		for i := 1; c.Contexts[merged] != nil; i++ {
			merged = fmt.Sprintf("%s-%d", name, i)
		}

		if merged != name {
			renames = append(renames, Rename{From: name, To: merged})
		}

		mapped[name] = merged
		c.Contexts[merged] = other.Contexts[name].clone()
	}

	if other.Context != "" {
		if merged, ok := mapped[other.Context]; ok {
			c.Context = merged
		}
	}

	return renames
}

func (ctx *Context) clone() *Context {
	if ctx == nil {
		return &Context{}
	}

	out := *ctx
	out.Endpoints = slices.Clone(ctx.Endpoints)
	out.Nodes = slices.Clone(ctx.Nodes)
	out.Extra = maps.Clone(ctx.Extra)

	return &out
}

// CAPEM decodes the CA certificate(s) the context trusts.
func (ctx *Context) CAPEM() ([]byte, error) {
	return decodePEMField("ca", ctx.CA)
}

// CrtPEM decodes the client certificate.
func (ctx *Context) CrtPEM() ([]byte, error) {
	return decodePEMField("crt", ctx.Crt)
}

// KeyPEM decodes the client private key.
func (ctx *Context) KeyPEM() ([]byte, error) {
	return decodePEMField("key", ctx.Key)
}

func decodePEMField(field, value string) ([]byte, error) {
	if value == "" {
		return nil, fmt.Errorf("context has no %s", field)
	}

	out, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil, fmt.Errorf("context %s: not valid base64: want the standard base64 encoding of PEM text", field)
	}

	return out, nil
}
