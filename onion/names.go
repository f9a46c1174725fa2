package onion

import (
	"fmt"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// checkAppName refuses app names that are not DNS labels (internal/names: the one app-name
// rule of onionpod). App names become directory names in the store.
func checkAppName(app string) error {
	if err := names.App(app); err != nil {
		return fmt.Errorf("onion: %w", err)
	}
	return nil
}

// checkClientName refuses client names that would not make a plain file name
// "<client>.auth": 1-63 characters of letters, digits, '-', '_' and '.', not starting with '.'.
func checkClientName(client string) error {
	if !validClientName(client) {
		return errkind.BadInputf("onion: client name %q: want 1-63 of letters, digits, '-', '_', '.' (not first)", client)
	}
	return nil
}

func validClientName(client string) bool {
	ok := len(client) > 0 && len(client) <= 63 && client[0] != '.'
	for i := 0; ok && i < len(client); i++ {
		c := client[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return ok
}
