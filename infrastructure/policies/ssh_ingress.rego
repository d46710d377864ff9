# SSH is reached from the administrators' addresses only, never from the whole internet.
package socialnet.terraform.ssh_ingress

import rego.v1

anywhere := {"0.0.0.0/0", "::/0"}

planned contains change if {
	some change in input.resource_changes
	change.mode == "managed"
	change.change.after != null
}

# Inline rules of a security group.
deny contains finding if {
	some change in planned
	change.type == "aws_security_group"
	some rule in change.change.after.ingress
	from_anywhere(rule)
	reaches_ssh(rule.protocol, rule.from_port, rule.to_port)
	finding := {"address": change.address, "message": sprintf("ingress %v %v-%v is open to the whole internet and reaches SSH (22)", [rule.protocol, rule.from_port, rule.to_port])}
}

# Standalone rules.
deny contains finding if {
	some change in planned
	change.type == "aws_security_group_rule"
	rule := change.change.after
	rule.type == "ingress"
	from_anywhere(rule)
	reaches_ssh(rule.protocol, rule.from_port, rule.to_port)
	finding := {"address": change.address, "message": sprintf("ingress %v %v-%v is open to the whole internet and reaches SSH (22)", [rule.protocol, rule.from_port, rule.to_port])}
}

deny contains finding if {
	some change in planned
	change.type == "aws_vpc_security_group_ingress_rule"
	rule := change.change.after
	some cidr in [object.get(rule, "cidr_ipv4", ""), object.get(rule, "cidr_ipv6", "")]
	cidr in anywhere
	reaches_ssh(rule.ip_protocol, object.get(rule, "from_port", 0), object.get(rule, "to_port", 65535))
	finding := {"address": change.address, "message": sprintf("ingress from %v reaches SSH (22)", [cidr])}
}

from_anywhere(rule) if {
	some cidr in object.get(rule, "cidr_blocks", [])
	cidr in anywhere
}

from_anywhere(rule) if {
	some cidr in object.get(rule, "ipv6_cidr_blocks", [])
	cidr in anywhere
}

# Protocol -1 (or "all") opens every port, whatever the port range says.
reaches_ssh(protocol, _, _) if {
	lower(sprintf("%v", [protocol])) in {"-1", "all"}
}

reaches_ssh(protocol, from, to) if {
	lower(sprintf("%v", [protocol])) in {"tcp", "6"}
	from <= 22
	to >= 22
}
