package killmail

import (
	"fmt"
	"strconv"
)

// Key returns the Kafka record key for a solar system: its id in decimal
// ASCII, so kcat and other tools can write and read records, and Kafka's
// murmur2 partitioner puts every killmail of a system on one partition.
func Key(systemID int64) []byte {
	return strconv.AppendInt(nil, systemID, 10)
}

// ParseKey reads a record key written by Key (or by any other producer that
// follows the same convention). It rejects anything but a positive decimal
// integer, so a record with a foreign key is skipped rather than misfiled.
func ParseKey(key []byte) (int64, error) {
	if len(key) == 0 {
		return 0, fmt.Errorf("record key is empty; want a solar system id")
	}
	if len(key) > 18 {
		return 0, fmt.Errorf("record key %.20q is too long for a solar system id", key)
	}
	var id int64
	for _, c := range key {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("record key %q is not a decimal solar system id", key)
		}
		id = id*10 + int64(c-'0')
	}
	if id <= 0 {
		return 0, fmt.Errorf("record key %q is not a positive solar system id", key)
	}
	return id, nil
}
