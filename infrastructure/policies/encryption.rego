# Data at rest is encrypted: S3 buckets have default server-side encryption, EBS volumes (the
# nodes' root and data volumes, standalone volumes, launch templates) and databases are encrypted.
package socialnet.terraform.encryption

import rego.v1

s3_algorithms := {"AES256", "aws:kms", "aws:kms:dsse"}

planned contains change if {
	some change in input.resource_changes
	change.mode == "managed"
	change.change.after != null
}

deny contains finding if {
	some change in planned
	change.type == "aws_s3_bucket"
	not beside(change, "aws_s3_bucket_server_side_encryption_configuration")
	count(object.get(change.change.after, "server_side_encryption_configuration", [])) == 0
	finding := {"address": change.address, "message": "no aws_s3_bucket_server_side_encryption_configuration encrypts it"}
}

deny contains finding if {
	some change in planned
	change.type == "aws_s3_bucket_server_side_encryption_configuration"
	some rule in change.change.after.rule
	some setting in rule.apply_server_side_encryption_by_default
	not setting.sse_algorithm in s3_algorithms
	finding := {"address": change.address, "message": sprintf("sse_algorithm %v is not one of %v", [setting.sse_algorithm, s3_algorithms])}
}

deny contains finding if {
	some change in planned
	change.type == "aws_instance"
	count(object.get(change.change.after, "root_block_device", [])) == 0
	finding := {"address": change.address, "message": "no root_block_device with encrypted = true: the root volume would not be encrypted"}
}

deny contains finding if {
	some change in planned
	change.type == "aws_instance"
	some kind in ["root_block_device", "ebs_block_device"]
	some device in object.get(change.change.after, kind, [])
	object.get(device, "encrypted", false) != true
	finding := {"address": change.address, "message": sprintf("%v is not encrypted", [kind])}
}

deny contains finding if {
	some change in planned
	change.type == "aws_ebs_volume"
	object.get(change.change.after, "encrypted", false) != true
	finding := {"address": change.address, "message": "the volume is not encrypted"}
}

deny contains finding if {
	some change in planned
	change.type == "aws_launch_template"
	some mapping in object.get(change.change.after, "block_device_mappings", [])
	some ebs in object.get(mapping, "ebs", [])
	not object.get(ebs, "encrypted", "false") in {"true", true}
	finding := {"address": change.address, "message": sprintf("the EBS volume of %v is not encrypted", [mapping.device_name])}
}

deny contains finding if {
	some change in planned
	change.type in {"aws_db_instance", "aws_rds_cluster"}
	object.get(change.change.after, "storage_encrypted", false) != true
	finding := {"address": change.address, "message": "storage_encrypted is not true"}
}

beside(change, type) if {
	some other in planned
	other.type == type
	object.get(other, "module_address", "") == object.get(change, "module_address", "")
}
