package onion

import "fmt"

// checkAppName refuses app names that are not DNS labels: 1-63 characters of a-z, 0-9 and
// '-', not starting or ending with '-'. App names become directory names in the store.
func checkAppName(app string) error {
	if !isDNSLabel(app) {
		return fmt.Errorf("onion: app name %q: want a DNS label (1-63 of a-z, 0-9, '-', not at either end): %w", app, ErrBadInput)
	}
	return nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkClientName refuses client names that would not make a plain file name
// "<client>.auth": 1-63 characters of letters, digits, '-', '_' and '.', not starting with '.'.
func checkClientName(client string) error {
	ok := len(client) > 0 && len(client) <= 63 && client[0] != '.'
	for i := 0; ok && i < len(client); i++ {
		c := client[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return fmt.Errorf("onion: client name %q: want 1-63 of letters, digits, '-', '_', '.' (not first): %w", client, ErrBadInput)
	}
	return nil
}
