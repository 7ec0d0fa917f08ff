variable "name" {
  description = "Name of the service and prefix of every resource."
  type        = string
  default     = "switchyard"
}

variable "vpc_id" {
  description = "VPC the tasks and the load balancer run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the tasks and the internal Network Load Balancer (one per availability zone)."
  type        = list(string)
}

variable "image" {
  description = "Container image, e.g. ghcr.io/switchyard-proxy/switchyard:0.1.0 (pin a tag or digest)."
  type        = string
}

variable "config_toml" {
  description = "The switchyard config file's content. Secrets go in secrets (password_env, token_env), never here. [admin] must listen on 0.0.0.0:<admin_port> for the NLB health check."
  type        = string
}

variable "secrets" {
  description = "Environment variables filled from Secrets Manager: variable name => secret ARN (or ARN:json-key::). E.g. APP_PASSWORD, SWITCHYARD_ADMIN_TOKEN."
  type        = map(string)
  default     = {}
}

variable "listener_port" {
  description = "The port clients connect to and the proxy listens on: 5432 (PostgreSQL) or 3306 (MySQL)."
  type        = number
}

variable "admin_port" {
  description = "The admin API's port (health, readiness, metrics)."
  type        = number
  default     = 9187
}

variable "shutdown_timeout_seconds" {
  description = "[server] shutdown_timeout of the config: how long a stopping task drains its sessions."
  type        = number
  default     = 30
}

variable "idle_timeout_seconds" {
  description = "The NLB listener's TCP idle timeout (60-6000 s; AWS default 350 s, which silently cuts idle pooled connections)."
  type        = number
  default     = 1800
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 1024
}

variable "desired_count" {
  description = "Tasks at start; autoscaling moves it between min_count and max_count."
  type        = number
  default     = 2
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps."
  type        = number
  default     = 2
}

variable "max_count" {
  description = "Most tasks autoscaling runs."
  type        = number
  default     = 6
}

variable "cpu_target_percent" {
  description = "Average task CPU that autoscaling aims for."
  type        = number
  default     = 60
}

variable "client_cidrs" {
  description = "Networks whose applications connect to the proxy."
  type        = list(string)
}

variable "monitoring_cidrs" {
  description = "Networks that scrape /metrics on the admin port (Prometheus)."
  type        = list(string)
  default     = []
}

variable "database_security_group_ids" {
  description = "Security groups of the old and new database clusters; the tasks get ingress to them on database_port."
  type        = list(string)
  default     = []
}

variable "database_port" {
  description = "Port of the database clusters."
  type        = number
  default     = 5432
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the proxy's logs."
  type        = number
  default     = 365
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the log group (null: CloudWatch's default encryption)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "access_logs_bucket" {
  description = "S3 bucket for the NLB's access logs (null: none)."
  type        = string
  default     = null
}
