output "ids" {
  description = "Instance ids, in node order."
  value       = aws_instance.node[*].id
}

output "private_ips" {
  description = "Private addresses, in node order."
  value       = aws_instance.node[*].private_ip
}

output "public_ips" {
  description = "Public addresses, in node order (empty strings where a node has none)."
  value       = aws_instance.node[*].public_ip
}

output "nodes" {
  description = "Per node: name, role (control_plane or workers), private and public address; what Ansible's inventory is built from."
  value = [
    for node in aws_instance.node : {
      name       = node.tags["Name"]
      role       = node.tags["Role"]
      private_ip = node.private_ip
      public_ip  = node.public_ip
    }
  ]
}
