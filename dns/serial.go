package dns

import "time"

// serialGreater reports whether a is greater than b in RFC 1982 serial
// number arithmetic (32 bits).
func serialGreater(a, b uint32) bool {
	return a != b && (a-b) < 1<<31
}

// dateSerial is YYYYMMDD00 for t in UTC.
func dateSerial(t time.Time) uint32 {
	y, m, d := t.UTC().Date()
	return uint32(y*1000000 + int(m)*10000 + d*100)
}

// nextSerial returns the serial that follows prev: today's YYYYMMDD00 when
// that is ahead of prev, else prev+1. It never goes backwards, so after 99
// changes in a day the serial simply runs into tomorrow's numbers.
func nextSerial(prev uint32, now time.Time) uint32 {
	if d := dateSerial(now); serialGreater(d, prev) {
		return d
	}
	return prev + 1
}
