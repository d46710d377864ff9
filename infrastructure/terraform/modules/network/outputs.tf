output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "subnet_ids" {
  description = "Subnets for the nodes, one per availability zone."
  value       = aws_subnet.nodes[*].id
}

output "security_group_id" {
  description = "The cluster nodes' security group."
  value       = aws_security_group.nodes.id
}
