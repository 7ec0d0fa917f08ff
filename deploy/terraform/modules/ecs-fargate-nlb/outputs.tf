output "nlb_dns_name" {
  description = "Where applications connect (host of their database URL)."
  value       = aws_lb.this.dns_name
}

output "target_group_arn" {
  description = "The NLB target group of the tasks."
  value       = aws_lb_target_group.this.arn
}

output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.this.name
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "task_security_group_id" {
  description = "Security group of the tasks (allow it on the databases if not done here)."
  value       = aws_security_group.task.id
}

output "log_group_name" {
  description = "CloudWatch log group of the proxy."
  value       = aws_cloudwatch_log_group.this.name
}
