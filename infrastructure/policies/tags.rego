# Every taggable resource carries the tags that say whose it is and what manages it. The stacks
# set them once as the provider's default_tags, which the plan shows in `tags_all`.
package socialnet.terraform.tags

import rego.v1

required := {"Project", "Environment", "ManagedBy"}

# Managed resources as the plan leaves them: created, updated, replaced or kept (not deleted).
planned contains change if {
	some change in input.resource_changes
	change.mode == "managed"
	change.change.after != null
}

deny contains finding if {
	some change in planned
	tags := object.get(change.change.after, "tags_all", null)
	is_object(tags)
	some tag in required
	not filled(tags, tag)
	finding := {
		"address": change.address,
		"message": sprintf("required tag %s is missing (set it in the provider's default_tags)", [tag]),
	}
}

filled(tags, tag) if {
	is_string(tags[tag])
	tags[tag] != ""
}
