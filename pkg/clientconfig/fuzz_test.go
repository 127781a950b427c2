package clientconfig_test

import (
	"testing"

	"github.com/nodepki/nodepki/pkg/clientconfig"
)

// FuzzParse: any talosconfig input is parsed without a panic, and a parsed one encodes.
func FuzzParse(f *testing.F) {
	data, err := clientconfig.New("test", []string{"10.0.0.1"}, []byte("ca"), []byte("crt"), []byte("key")).Bytes()
	if err != nil {
		f.Fatal(err)
	}

	f.Add(data)
	f.Add([]byte("context: a\ncontexts:\n  a:\n    endpoints: [x]\n"))
	f.Add([]byte(""))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := clientconfig.Parse(data)
		if err != nil {
			return
		}

		_, _ = cfg.Info()

		if _, err = cfg.Bytes(); err != nil {
			t.Fatalf("encoding a parsed talosconfig: %v", err)
		}
	})
}
