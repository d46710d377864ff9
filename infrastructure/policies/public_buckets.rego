# No bucket is public: no public ACL, no policy granting everyone, and every bucket's public
# access fully blocked by an aws_s3_bucket_public_access_block beside it (in the same module).
package socialnet.terraform.public_buckets

import rego.v1

public_acls := {"public-read", "public-read-write", "authenticated-read"}

block_flags := ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]

planned contains change if {
	some change in input.resource_changes
	change.mode == "managed"
	change.change.after != null
}

deny contains finding if {
	some change in planned
	change.type in {"aws_s3_bucket", "aws_s3_bucket_acl"}
	acl := object.get(change.change.after, "acl", null)
	acl in public_acls
	finding := {"address": change.address, "message": sprintf("the ACL %v makes the bucket public", [acl])}
}

deny contains finding if {
	some change in planned
	change.type == "aws_s3_bucket_public_access_block"
	some flag in block_flags
	object.get(change.change.after, flag, false) != true
	finding := {"address": change.address, "message": sprintf("%v is off: public access is not blocked", [flag])}
}

deny contains finding if {
	some change in planned
	change.type == "aws_s3_bucket"
	not beside(change, "aws_s3_bucket_public_access_block")
	finding := {"address": change.address, "message": "no aws_s3_bucket_public_access_block blocks its public access"}
}

deny contains finding if {
	some change in planned
	change.type == "aws_s3_bucket_policy"
	is_string(change.change.after.policy)
	document := json.unmarshal(change.change.after.policy)
	some statement in as_list(document.Statement)
	statement.Effect == "Allow"
	to_everyone(statement.Principal)
	not statement.Condition
	finding := {"address": change.address, "message": "the bucket policy allows everyone (Principal *) without a condition"}
}

beside(change, type) if {
	some other in planned
	other.type == type
	object.get(other, "module_address", "") == object.get(change, "module_address", "")
}

as_list(value) := value if is_array(value)

as_list(value) := [value] if is_object(value)

to_everyone("*")

to_everyone(principal) if {
	is_object(principal)
	some value in principal
	value == "*"
}

to_everyone(principal) if {
	is_object(principal)
	some values in principal
	is_array(values)
	"*" in values
}
