package clientconfig

import (
	"fmt"
	"slices"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
)

// Info summarises the current context, for `config info`. The JSON/YAML keys are those of
// `talosctl config info -o json`.
type Info struct {
	Context   string   `json:"context" yaml:"context"`
	Endpoints []string `json:"endpoints" yaml:"endpoints"`
	Nodes     []string `json:"nodes" yaml:"nodes"`
	// Roles are the Organization values of the client certificate.
	Roles []string `json:"roles" yaml:"roles"`
	// CertTTL is how long the client certificate remains valid, relative to now ("in 364 days",
	// "expired 2 days ago"); empty without a certificate.
	CertTTL string `json:"certTTL" yaml:"certTTL"`
	// CertNotAfter is when the client certificate expires; zero without a certificate.
	CertNotAfter time.Time `json:"certNotAfter" yaml:"certNotAfter"`
}

// Info describes the current context and its client certificate.
func (c *Config) Info() (*Info, error) {
	return c.infoAt(time.Now())
}

func (c *Config) infoAt(now time.Time) (*Info, error) {
	ctx, err := c.Current()
	if err != nil {
		return nil, err
	}

	info := &Info{
		Context:   c.Context,
		Endpoints: slices.Clone(ctx.Endpoints),
		Nodes:     slices.Clone(ctx.Nodes),
	}

	if ctx.Crt == "" {
		return info, nil
	}

	crtPEM, err := ctx.CrtPEM()
	if err != nil {
		return nil, fmt.Errorf("context %q: %w", c.Context, err)
	}

	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		return nil, fmt.Errorf("context %q: client certificate: %w", c.Context, err)
	}

	info.Roles = slices.Clone(crt.Subject.Organization)
	info.CertNotAfter = crt.NotAfter.UTC()
	info.CertTTL = Relative(crt.NotAfter.Sub(now))

	return info, nil
}

// Relative renders how far away a point in time is: "in 364 days", "in 5 hours", "expired 3
// days ago". Units are truncated, so a certificate issued for 365 days shows "in 364 days" a
// moment after it was issued.
func Relative(d time.Duration) string {
	if d < 0 {
		return "expired " + amount(-d) + " ago"
	}

	return "in " + amount(d)
}

func amount(d time.Duration) string {
	const day = 24 * time.Hour

	switch {
	case d >= 2*day:
		return plural(int64(d/day), "day")
	case d >= 2*time.Hour:
		return plural(int64(d/time.Hour), "hour")
	case d >= 2*time.Minute:
		return plural(int64(d/time.Minute), "minute")
	default:
		return plural(int64(d/time.Second), "second")
	}
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}

	return fmt.Sprintf("%d %ss", n, unit)
}
