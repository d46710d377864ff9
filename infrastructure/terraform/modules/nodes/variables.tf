variable "name" {
  description = "Prefix of the node names, e.g. socialnet-staging."
  type        = string
}

variable "node_count" {
  description = "How many cluster nodes; the first is the control plane, the others are workers."
  type        = number

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 50 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number between 1 and 50."
  }
}

variable "node_size" {
  description = "EC2 instance type of every node, e.g. t3.medium."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.node_size))
    error_message = "node_size must be an EC2 instance type such as t3.medium."
  }
}

variable "image_id" {
  description = "AMI of the nodes; null looks up the newest image matching image_owners/image_name."
  type        = string
  default     = null
}

variable "image_owners" {
  description = "Owners searched when image_id is null (Canonical by default)."
  type        = list(string)
  default     = ["099720109477"]
}

variable "image_name" {
  description = "Name pattern searched when image_id is null."
  type        = string
  default     = "ubuntu/images/hvm-ssd*/ubuntu-*-amd64-server-*"
}

variable "subnet_ids" {
  description = "Subnets the nodes are spread over, round robin."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of every node."
  type        = list(string)
}

variable "root_volume_gb" {
  description = "Size of each node's root volume."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
