package certs

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Shape rules for the subject alternative names of a node certificate. trustd signs a worker's
// node API certificate only when every requested SAN passes them, and machine config validation
// applies the same rules to machine.certSANs, so that a config is refused at once instead of every
// renewal failing later.
const (
	// MaxSANs bounds the DNS names and IP addresses of one certificate.
	MaxSANs           = 64
	maxDNSNameLength  = 253
	maxDNSLabelLength = 63
)

// CheckDNSName accepts a host name of letter-digit-hyphen labels. Wildcards are refused because a
// node certificate names the node, not a domain; an IP address must be an IP SAN.
func CheckDNSName(name string) error {
	if strings.Contains(name, "*") {
		return errors.New("wildcard names are not allowed: use the node's exact names")
	}

	if name == "" || len(name) > maxDNSNameLength {
		return fmt.Errorf("must be 1 to %d characters", maxDNSNameLength)
	}

	if net.ParseIP(name) != nil {
		return errors.New("is an IP address: request it as an IP SAN")
	}

	for label := range strings.SplitSeq(name, ".") {
		if err := checkDNSLabel(label); err != nil {
			return err
		}
	}

	return nil
}

// CheckIPSAN refuses the unspecified address, which names no node.
func CheckIPSAN(ip net.IP) error {
	if ip.IsUnspecified() {
		return fmt.Errorf("%s is the unspecified address: use the node's own addresses", ip)
	}

	return nil
}

// CheckSAN checks a SAN written as text, as in machine.certSANs: an IP address or a DNS name. The
// surrounding spaces and one trailing dot are ignored, as when the node builds its SAN set.
func CheckSAN(san string) error {
	name := strings.TrimSuffix(strings.TrimSpace(san), ".")
	if name == "" {
		return errors.New("is empty: remove the entry or set a DNS name or IP address of the node")
	}

	if ip := net.ParseIP(name); ip != nil {
		return CheckIPSAN(ip)
	}

	return CheckDNSName(name)
}

func checkDNSLabel(label string) error {
	if label == "" || len(label) > maxDNSLabelLength {
		return fmt.Errorf("every label must be 1 to %d characters (no empty label, no trailing dot)", maxDNSLabelLength)
	}

	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}

	for _, ch := range label {
		if !isLetterDigitHyphen(ch) {
			return fmt.Errorf("label %q has character %q: only letters, digits and hyphens are allowed", label, ch)
		}
	}

	return nil
}

func isLetterDigitHyphen(ch rune) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-'
}
