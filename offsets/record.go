package offsets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The record key is "<client_id>/<system_id>". Client ids may contain '/', so
// the key is split at the last '/': the system id is always digits.
func recordKey(clientID string, systemID int64) []byte {
	b := make([]byte, 0, len(clientID)+12)
	b = append(b, clientID...)
	b = append(b, '/')
	return strconv.AppendInt(b, systemID, 10)
}

func parseKey(key []byte) (clientID string, systemID int64, err error) {
	i := bytes.LastIndexByte(key, '/')
	if i <= 0 {
		return "", 0, fmt.Errorf("offsets record key %q has no client/system separator", key)
	}
	systemID, err = strconv.ParseInt(string(key[i+1:]), 10, 64)
	if err != nil || systemID <= 0 {
		return "", 0, fmt.Errorf("offsets record key %q has no valid system id", key)
	}
	return string(key[:i]), systemID, nil
}

// recordValue is the JSON value of a position record, readable with any
// Kafka tool. Offsets maps a killmails partition to the next offset to read.
type recordValue struct {
	Offsets   map[int32]int64 `json:"offsets"`
	UpdatedMS int64           `json:"updated_ms"`
}

func encodeValue(offsets map[int32]int64, updated time.Time) []byte {
	b, _ := json.Marshal(recordValue{Offsets: offsets, UpdatedMS: updated.UnixMilli()})
	return b
}

func decodeValue(b []byte) (recordValue, error) {
	var v recordValue
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decoding offsets record value: %w", err)
	}
	for p, o := range v.Offsets {
		if p < 0 || o < 0 {
			return v, fmt.Errorf("offsets record value has negative partition or offset (%d:%d)", p, o)
		}
	}
	return v, nil
}
