// Package killmail defines what a killmail record in Kafka looks like: the
// record key (the solar system id in decimal ASCII) and the normalised JSON
// value, and turns the many shapes sources deliver into that one shape.
//
// It is pure data handling: it must not talk to Kafka or the network.
package killmail
